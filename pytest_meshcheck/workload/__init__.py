"""The echo workload: one stdlib-only process per service replica (``echo.py``) and its admin client."""
