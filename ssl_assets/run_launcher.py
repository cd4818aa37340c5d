"""The local instance's run launcher: Dagster's default one, plus a run worker health check.

Why: a run whose worker process is killed (`kill -9`, the OOM killer, a closed laptop lid that
ended `dagster dev`) stays STARTED forever: nothing is left to report its end. Dagster's run
monitoring (the `run_monitoring` section of `dagster_home/dagster.yaml`) marks such a run
failed, but only with a run launcher that can say whether a worker is alive, and the
`DefaultRunLauncher` cannot (`supports_check_run_worker_health` is False). This subclass can,
for what runs on this machine, from the pid the run worker records when it starts ("Started
process for run (pid: N)") or, for runs executed in-process by `ssl-assets run`, from the
`ssl/pid` tag those runs carry. A failed run is then what the landing sensor re-requests.

A worker counts as alive while its pid exists, is not a zombie, and started no later than the
run's start event (a reused pid belongs to a younger process). A run worker on another host (a
code location served over gRPC from elsewhere) cannot be checked from here: it is reported as
running, never failed on a guess.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from dagster import DagsterEventType, DagsterRun, DefaultRunLauncher
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus

#: set on runs executed in-process (`ssl-assets run`): the process and host that run them
PID_TAG = "ssl/pid"
HOST_TAG = "ssl/host"
_STARTED = re.compile(r"Started process for run \(pid: (\d+)\)")
_EXITED = re.compile(r"Process for run exited \(pid: (\d+)\)")
_LOCAL_HOSTS = {None, "", "localhost", "127.0.0.1", "::1", "0.0.0.0"}  # noqa: S104


def process_tags() -> dict[str, str]:
    """Tags naming this process, for runs it executes in-process."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def _start_time(pid: int) -> float | None:
    """When process `pid` started (epoch seconds), from /proc; None where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def process_alive(pid: int, started_by: float | None = None) -> bool:
    """Whether `pid` is a live process (not a zombie) that started no later than `started_by`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        state = None
    if state in ("Z", "X"):
        return False
    began = _start_time(pid)
    # 2 s of slack: clock-tick rounding and the gap between fork and the recorded event
    return not (started_by is not None and began is not None and began > started_by + 2.0)


class LocalRunLauncher(DefaultRunLauncher):
    """`DefaultRunLauncher` whose run workers' health can be checked (see the module doc)."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        pid, started_at, exited = self._worker(run)
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no local worker pid to check")
        if exited:
            return CheckRunHealthResult(
                WorkerStatus.FAILED, f"run worker {pid} exited without ending the run"
            )
        if process_alive(pid, started_at):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker {pid} is alive")
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"run worker process {pid} is gone (killed?) while the run was still STARTED",
        )

    def _worker(self, run: DagsterRun) -> tuple[int | None, float | None, bool]:
        """(pid, when it was recorded, whether it reported its exit) of the run's worker, if it
        ran on this machine."""
        if run.tags.get(PID_TAG):
            if run.tags.get(HOST_TAG) not in (None, socket.gethostname()):
                return None, None, False
            record = self._instance.get_run_record_by_id(run.run_id)
            began = record.start_time if record is not None else None
            return int(run.tags[PID_TAG]), began, False
        grpc_info = run.tags.get("dagster/grpc_info") or ""
        host = re.search(r'"host":\s*"([^"]*)"', grpc_info)
        if host and host.group(1) not in _LOCAL_HOSTS and host.group(1) != socket.gethostname():
            return None, None, False
        pid, began, exited = None, None, False
        for entry in self._instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT):
            text = entry.message or ""
            if match := _STARTED.search(text):
                pid, began, exited = int(match.group(1)), entry.timestamp, False
            elif (match := _EXITED.search(text)) and pid == int(match.group(1)):
                exited = True
        return pid, began, exited


__all__ = ["HOST_TAG", "PID_TAG", "LocalRunLauncher", "process_alive", "process_tags"]
