"""Start `dagster dev` on a free port with a temporary DAGSTER_HOME and lake, and talk GraphQL.

Used by the end-to-end tests; the server is a real `dagster dev` process group, stopped (and
waited for) when the context manager exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class DagsterServer:
    port: int
    home: Path
    lake: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            payload = json.loads(resp.read())
        if payload.get("errors"):
            raise AssertionError(payload["errors"])
        return payload["data"]


@contextlib.contextmanager
def dagster_dev(tmp_path: Path, extra_env: dict[str, str] | None = None) -> Iterator[DagsterServer]:
    home = tmp_path / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    lake = tmp_path / "lake"
    (lake / "landing").mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = tmp_path / "dagster_dev.log"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "SSL_LAKE": str(lake),
        "SSL_PROFILE": "tiny",
        **(extra_env or {}),
    }
    dagster = Path(sys.executable).with_name("dagster")
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = DagsterServer(port=port, home=home, lake=lake, log=log)
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"dagster dev exited early:\n{log.read_text()[-4000:]}")
            try:
                server.graphql("{ version }")
                break
            except (OSError, AssertionError):
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"dagster dev did not start:\n{log.read_text()[-4000:]}"
                    ) from None
                time.sleep(1)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
