"""pytest glue for pytest-meshcheck (loaded through the ``pytest11`` entry point ``meshcheck``)."""
