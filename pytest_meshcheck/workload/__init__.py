"""Programs that run outside the test process: the echo workload and the in-mesh agent.

Each is standard library only (Python 3.11+) and runs as its own process, locally or in a pod, from the
files :mod:`pytest_meshcheck.workload.bundle` lists (the one module here that the test process imports):

- :mod:`pytest_meshcheck.workload.echo`: one process per service replica, with chaos and counters.
- :mod:`pytest_meshcheck.workload.agent`: the caller in a cluster; runs the load engine through its sidecar.
- :mod:`pytest_meshcheck.workload.agent_records`: the agent's numpy-free record store.

This file is shipped too, so it imports nothing.
"""
