"""Fault tolerance: a training process SIGKILLed after a checkpoint resumes to bit-identical weights.

Each case starts two `python -m ssl_assets.ml.entrypoint` processes side by side (one thread
each, `deterministic=True`): a reference run, and a run that is SIGKILLed as soon as its
checkpoint for step 10 appears (mid-epoch: 16 steps per epoch). The killed run is then
re-executed with the same job, as a Dagster retry would, and must end with exactly the same
encoder, final checkpoint tensors (student, momentum teacher, MoCo queue, BatchNorm statistics,
optimiser state) and per-epoch losses as the reference. MoCo covers the momentum teacher (key
encoder, with BatchNorm statistics) and the queue; SimCLR with gradient accumulation covers the
sampler position within an epoch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ssl_assets.ml.checkpoint import list_checkpoints
from ssl_assets.ml.config import TrainConfig
from ssl_assets.ml.data import synthetic_shapes
from ssl_assets.ml.entrypoint import TrainJob

REPO = Path(__file__).resolve().parents[1]
KILL_AFTER_STEP = 10
TOTAL_STEPS = 64

CASES: dict[str, dict[str, Any]] = {
    "simclr": {"objective": {"hidden_dim": 32, "out_dim": 16}, "accumulate": 2},
    "moco": {"objective": {"hidden_dim": 32, "out_dim": 16, "queue_size": 48}},
}


def _job(root: Path, data: Path, method: str, run: str) -> Path:
    cfg = TrainConfig(
        method=method,
        backbone_kwargs={"widths": [8, 16], "strides": [2, 2], "input_size": 16},
        max_steps=TOTAL_STEPS,
        batch_size=32,
        lr=3e-3,
        warmup_steps=5,
        checkpoint_every=5,
        num_threads=1,
        deterministic=True,
        **CASES[method],
    )
    job = TrainJob(
        config=cfg,
        train=[[str(data), None]],
        checkpoint_dir=str(root / run / "ckpt"),
        output_dir=str(root / run / "out"),
        result_dir=str(root / run / "result"),
    )
    return job.write(root / run / "job.json")


def _launch(job: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("DAGSTER_PIPES_CONTEXT", None)
    return subprocess.Popen(
        [sys.executable, "-m", "ssl_assets.ml.entrypoint", "--job", str(job)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _finish(proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode()[-3000:]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.npy"
    np.save(path, synthetic_shapes(512, 16, seed=0)[0])
    return path


@pytest.mark.parametrize("method", list(CASES))
def test_killed_run_resumes_to_identical_weights(method: str, data: Path, tmp_path: Path) -> None:
    reference = _launch(_job(tmp_path, data, method, "reference"))
    victim_job = _job(tmp_path, data, method, "victim")
    victim = _launch(victim_job)
    ckpt = tmp_path / "victim" / "ckpt"
    target = ckpt / f"step_{KILL_AFTER_STEP:09d}"
    deadline = time.monotonic() + 120
    while not target.exists():
        assert victim.poll() is None, victim.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.002)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    newest = list_checkpoints(ckpt)[-1][0]
    assert KILL_AFTER_STEP <= newest < TOTAL_STEPS, "the run finished before it was killed"
    assert not (tmp_path / "victim" / "out" / "encoder.json").exists()

    _finish(_launch(victim_job))  # the retry: same job, same checkpoint directory
    _finish(reference)

    results = {
        run: json.loads((tmp_path / run / "result" / "result_rank0.json").read_text())
        for run in ("reference", "victim")
    }
    assert results["reference"]["resumed_from_step"] is None
    assert results["victim"]["resumed_from_step"] == newest
    assert results["victim"]["step"] == results["reference"]["step"] == TOTAL_STEPS
    losses = {run: [m["loss"] for m in r["history"]] for run, r in results.items()}
    assert losses["victim"] == losses["reference"]
    assert results["victim"]["model_sha256"] == results["reference"]["model_sha256"]

    # encoder and every checkpointed tensor (teacher, queue, optimiser state) are bit-identical
    enc = {r: load_file(str(tmp_path / r / "out" / "encoder.safetensors")) for r in results}
    assert enc["victim"].keys() == enc["reference"].keys()
    for name, value in enc["reference"].items():
        assert torch.equal(enc["victim"][name], value), name
    final = f"step_{TOTAL_STEPS:09d}/state.safetensors"
    states = {r: load_file(str(tmp_path / r / "ckpt" / final)) for r in results}
    assert states["victim"].keys() == states["reference"].keys()
    expected_keys = {
        "simclr": ["model/objective.head.layers.0.weight"],
        "moco": [
            "model/objective.queue.queue",
            "model/objective.key_backbone.features.1.running_mean",
        ],
    }
    assert all(k in states["reference"] for k in expected_keys[method])
    assert any(k.startswith("optim/") for k in states["reference"])
    for name, value in states["reference"].items():
        assert torch.equal(states["victim"][name], value), name
