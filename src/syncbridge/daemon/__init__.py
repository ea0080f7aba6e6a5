"""Running syncbridge as a service: `syncbridge daemon` (and its alias `run --every N`).

`service.py` the daemon (jobs, triggers, signals, reload), `work.py` what each job does,
`leases.py` job leases and the job board, `gate.py` the push's clean stop, `http.py` health,
readiness, metrics and admin endpoints, `metrics.py` job metrics, `reload.py` reloading the
setup, `runs.py` the run rows of jobs, `status.py` the jobs in `syncbridge status`.
"""

from .service import DaemonOptions, run_daemon

__all__ = ["DaemonOptions", "run_daemon"]
