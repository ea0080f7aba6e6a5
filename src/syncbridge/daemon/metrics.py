"""The daemon's job-level Prometheus metrics (default registry, served on /metrics).

Stage-level metrics (records pulled, journal lag, API calls, members pushed) are defined in
`syncbridge.metrics`; these say how each job's runs go, so that an alert can fire on a job
that has not succeeded for a while.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

JOB_LAST_SUCCESS = Gauge(
    "syncbridge_job_last_success_timestamp_seconds",
    "Unix time of the job's last successful run",
    ["job"],
)
JOB_DURATION = Histogram(
    "syncbridge_job_duration_seconds",
    "How long one run of a job took (a pull, a consumer pass, a destination's micro-batch)",
    ["job"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
JOB_RUNS = Counter("syncbridge_job_runs_total", "Runs of a job by result", ["job", "result"])
JOB_FAILURES_IN_A_ROW = Gauge(
    "syncbridge_job_consecutive_failures", "Failed runs of the job since its last success", ["job"]
)
JOB_LEASE_HELD = Gauge(
    "syncbridge_job_lease_held", "1 while this agent holds the job's lease", ["job"]
)
