"""A run whose worker process was killed is marked failed when the instance next looks (run
monitoring with ssl_assets.run_launcher.LocalRunLauncher), instead of staying STARTED."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.events import EngineEventData
from dagster._core.test_utils import create_run_for_test
from dagster._daemon.monitoring.run_monitoring import monitor_started_run

from ssl_assets.run_launcher import LocalRunLauncher, process_tags

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

ROOT = Path(__file__).resolve().parents[1]
SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]
LOG = logging.getLogger("test_run_monitoring")


@pytest.fixture
def local_instance(tmp_path):
    """A persistent instance configured like dagster_home/ (the project's local instance)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    with DagsterInstance.from_config(str(home)) as instance:
        yield instance


def _run_with_worker(instance: DagsterInstance, pid: int) -> str:
    """A STARTED run whose worker recorded its pid, as Dagster's run worker does."""
    run = create_run_for_test(instance, job_name="ingest_batch", status=DagsterRunStatus.STARTED)
    instance.report_engine_event(
        f"Started process for run (pid: {pid}).", run, EngineEventData.in_process(pid)
    )
    return run.run_id


def _monitor(instance: DagsterInstance, run_id: str) -> DagsterRunStatus:
    """One pass of the monitoring daemon over the run."""
    monitor_started_run(instance, None, instance.get_run_record_by_id(run_id), LOG)
    return instance.get_run_by_id(run_id).status


def test_the_local_instance_monitors_runs_with_a_launcher_that_checks_workers(local_instance):
    assert local_instance.run_monitoring_enabled
    assert isinstance(local_instance.run_launcher, LocalRunLauncher)
    assert local_instance.run_launcher.supports_check_run_worker_health
    assert local_instance.run_monitoring_max_resume_run_attempts == 0


def test_a_run_whose_worker_was_killed_is_marked_failed_and_a_live_one_is_left_alone(
    local_instance,
):
    killed, alive = subprocess.Popen(SLEEPER), subprocess.Popen(SLEEPER)
    try:
        dead_run = _run_with_worker(local_instance, killed.pid)
        live_run = _run_with_worker(local_instance, alive.pid)
        killed.kill()
        killed.wait()
        assert _monitor(local_instance, live_run) == DagsterRunStatus.STARTED
        assert _monitor(local_instance, dead_run) == DagsterRunStatus.FAILURE
        failure = [
            e.message
            for e in local_instance.all_logs(dead_run)
            if e.dagster_event and e.dagster_event.event_type_value == "PIPELINE_FAILURE"
        ]
        assert failure and f"run worker process {killed.pid} is gone" in failure[0]
    finally:
        alive.kill()
        alive.wait()


def test_an_in_process_run_of_a_killed_command_is_marked_failed(local_instance):
    """`ssl-assets run` executes runs in its own process and tags them with its pid."""
    command = subprocess.Popen(SLEEPER)
    tags = {**process_tags(), "ssl/pid": str(command.pid)}
    run = create_run_for_test(
        local_instance, job_name="ingest_batch", status=DagsterRunStatus.STARTED, tags=tags
    )
    assert _monitor(local_instance, run.run_id) == DagsterRunStatus.STARTED
    command.kill()
    command.wait()
    assert _monitor(local_instance, run.run_id) == DagsterRunStatus.FAILURE


def test_a_reused_pid_does_not_keep_a_dead_run_alive():
    """A pid recorded by a worker that died may since belong to a younger process."""
    import time

    from ssl_assets.run_launcher import process_alive

    younger = subprocess.Popen(SLEEPER)
    try:
        assert process_alive(younger.pid, started_by=time.time())
        # recorded an hour before this process existed: not the run's worker
        assert not process_alive(younger.pid, started_by=time.time() - 3600)
    finally:
        younger.kill()
        younger.wait()
    assert not process_alive(younger.pid)
