"""A trainer dies with the process that started it (ssl_assets.ml.launch): an orchestrator
killed with SIGKILL must not leave an orphaned trainer writing an unregistered model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")

ROOT = Path(__file__).resolve().parents[1]
SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as gone: it can do nothing any more)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _start(script: str) -> tuple[subprocess.Popen, int]:
    """Run `script` in a new Python process; it prints the pid to watch, then sleeps."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, text=True, env=env
    )
    line = proc.stdout.readline()
    assert line.strip().isdigit(), line
    return proc, int(line)


def _kill_all(*pids: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_the_launched_trainer_dies_when_its_orchestrator_is_killed():
    parent, trainer = _start(
        f"""
        import os, subprocess, sys, time
        cmd = [sys.executable, "-m", "ssl_assets.ml.launch", "--parent", str(os.getpid()), "--",
               *{SLEEPER!r}]
        child = subprocess.Popen(cmd)
        time.sleep(1.0)  # the launcher has exec'd the "trainer" (same pid)
        print(child.pid, flush=True)
        time.sleep(120)
        """
    )
    try:
        assert _alive(trainer)
        cmdline = Path(f"/proc/{trainer}/cmdline").read_bytes().split(b"\0")
        assert b"import time; time.sleep(120)" in cmdline  # exec'd: the launcher is gone
        parent.kill()  # SIGKILL: no handler in the parent runs
        parent.wait()
        assert _gone_within(trainer, 5.0), "the trainer outlived its orchestrator"
    finally:
        _kill_all(parent.pid, trainer)


def test_a_worker_dies_with_its_agent_like_torchrun_ranks():
    """The entry point calls die_with_parent itself, so a rank dies with torchrun's agent."""
    agent, worker = _start(
        """
        import subprocess, sys, time
        code = "from ssl_assets.ml.launch import die_with_parent; die_with_parent(); " \\
               "import time; time.sleep(120)"
        child = subprocess.Popen([sys.executable, "-c", code])
        time.sleep(1.0)
        print(child.pid, flush=True)
        time.sleep(120)
        """
    )
    try:
        assert _alive(worker)
        agent.kill()
        agent.wait()
        assert _gone_within(worker, 5.0), "the worker outlived its agent"
    finally:
        _kill_all(agent.pid, worker)


def test_the_launcher_does_not_start_when_its_parent_is_already_gone(tmp_path):
    marker = tmp_path / "started"
    result = subprocess.run(
        [sys.executable, "-m", "ssl_assets.ml.launch", "--parent", "999999999", "--"]
        + [sys.executable, "-c", f"open({str(marker)!r}, 'w')"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert result.returncode == 1 and "is gone" in result.stderr
    assert not marker.exists()


def test_the_launcher_runs_its_command_in_its_own_place(tmp_path):
    """exec, not a child: the command keeps the launcher's pid (and with it the death signal,
    and Pipes' view of the process it started)."""
    marker = tmp_path / "pid"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ssl_assets.ml.launch", "--parent", str(os.getpid()), "--"]
        + [sys.executable, "-c", f"import os; open({str(marker)!r}, 'w').write(str(os.getpid()))"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.wait(timeout=60) == 0
    assert int(marker.read_text()) == proc.pid
