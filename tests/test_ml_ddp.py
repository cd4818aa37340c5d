"""Data-parallel training through the real entry point, under `torchrun` (two CPU ranks, gloo).

`test_ml_distributed.py` already shows that the objectives' losses and gradients on two ranks
equal one process on the concatenated batch. These tests cover what the entry point and the
training loop add on top: process-group setup from torchrun's environment, the DDP wrapping of
backbone *and* heads (with teachers copied before wrapping), the sampler's rank shards, and
Dagster Pipes being opened by rank 0 only.

To compare one SGD step without debugging hooks, both runs warm-start from the same encoder
weights, use SGD without momentum or weight decay (so `w1 = w0 - lr * grad`) and an
augmentation without randomness (full-image crop, no flip / jitter / grayscale), so both runs see
the same views of the same 16 images: rank r of 2 gets `perm[r::2]` of the same permutation.
GroupNorm encoder and BatchNorm-free head: nothing depends on per-rank batch statistics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
from dagster import PipesSubprocessClient, asset, materialize
from safetensors.torch import load_file, save_file

from ssl_assets.ml.backbones import build_backbone
from ssl_assets.ml.config import TrainConfig
from ssl_assets.ml.data import synthetic_shapes
from ssl_assets.ml.entrypoint import TrainJob

REPO = Path(__file__).resolve().parents[1]
BACKBONE = {"widths": [8, 16], "strides": [2, 2], "norm": "group", "input_size": 16}
NO_RANDOMNESS = {
    "scale": [1.0, 1.0],
    "ratio": [1.0, 1.0],
    "flip_prob": 0.0,
    "jitter_prob": 0.0,
    "gray_prob": 0.0,
}

pytestmark = pytest.mark.skipif(
    not dist.is_available() or sys.platform == "win32", reason="needs torch.distributed (gloo)"
)


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    env.pop("DAGSTER_PIPES_CONTEXT", None)
    return env


def _torchrun(job: Path, nproc: int = 2) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "--max-restarts",
        "0",
        "-m",
        "ssl_assets.ml.entrypoint",
        "--job",
        str(job),
    ]


def _job(root: Path, data: Path, warm: Path | None, **cfg: Any) -> Path:
    settings: dict[str, Any] = {
        "method": "simclr",
        "objective": {"hidden_dim": 16, "out_dim": 8, "head_batch_norm": False},
        "backbone_kwargs": BACKBONE,
        "augment": NO_RANDOMNESS,
        "batch_size": 16,
        "optimizer": "sgd",
        "momentum": 0.0,
        "weight_decay": 0.0,
        "warmup_steps": 0,
        "lr": 0.5,
        "num_threads": 1,
        "deterministic": True,
    }
    config = TrainConfig(**{**settings, **cfg})
    job = TrainJob(
        config=config,
        train=[[str(data), None]],
        checkpoint_dir=str(root / "ckpt"),
        output_dir=str(root / "out"),
        warm_start=str(warm) if warm is not None else None,
        result_dir=str(root / "result"),
    )
    return job.write(root / "job.json")


def _results(root: Path, world: int) -> list[dict[str, Any]]:
    return [
        json.loads((root / "result" / f"result_rank{r}.json").read_text()) for r in range(world)
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.npy"
    np.save(path, synthetic_shapes(64, 16, seed=0)[0])
    return path


def test_two_ranks_take_the_same_step_as_one_process(data: Path, tmp_path: Path) -> None:
    torch.manual_seed(7)
    w0 = build_backbone("small_cnn", **BACKBONE).state_dict()
    warm = tmp_path / "warm" / "encoder.safetensors"
    warm.parent.mkdir()
    save_file({k: v.contiguous() for k, v in w0.items()}, str(warm))

    ddp_job = _job(tmp_path / "ddp", data, warm, max_steps=1)
    single_job = _job(tmp_path / "single", data, warm, max_steps=1)
    ddp = subprocess.Popen(_torchrun(ddp_job), cwd=REPO, env=_env(), stderr=subprocess.PIPE)
    single = subprocess.Popen(
        [sys.executable, "-m", "ssl_assets.ml.entrypoint", "--job", str(single_job)],
        cwd=REPO,
        env=_env(),
        stderr=subprocess.PIPE,
    )
    for proc in (ddp, single):
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err.decode()[-4000:]

    ranks = _results(tmp_path / "ddp", 2)
    (one,) = _results(tmp_path / "single", 1)
    assert [r["world_size"] for r in ranks] == [2, 2] and one["world_size"] == 1
    # every rank ends with the same weights; only rank 0 writes the encoder
    assert ranks[0]["model_sha256"] == ranks[1]["model_sha256"]
    assert ranks[0]["encoder_path"] and ranks[1]["encoder_path"] is None
    # the loss (mean over ranks) equals one process's loss on the whole batch
    assert ranks[0]["history"][0]["loss"] == pytest.approx(one["history"][0]["loss"], abs=1e-5)
    assert ranks[0]["history"][0]["loss"] == ranks[1]["history"][0]["loss"]

    # one SGD step: w1 = w0 - lr * grad; equal heads show their gradients were averaged too
    ckpt = "ckpt/step_000000001/state.safetensors"
    after = {run: load_file(str(tmp_path / run / ckpt)) for run in ("ddp", "single")}
    assert after["ddp"].keys() == after["single"].keys()
    for name, value in after["single"].items():
        if name.startswith("model/"):
            torch.testing.assert_close(after["ddp"][name], value, rtol=1e-4, atol=1e-6, msg=name)
    lr = 0.5
    for name, w in w0.items():
        g_single = (w - after["single"][f"model/backbone.{name}"]) / lr
        g_ddp = (w - after["ddp"][f"model/backbone.{name}"]) / lr
        torch.testing.assert_close(g_ddp, g_single, rtol=1e-3, atol=1e-5, msg=name)
    conv = "features.0.weight"
    assert (w0[conv] - after["ddp"][f"model/backbone.{conv}"]).abs().max() > 1e-4  # it moved


def test_only_rank_zero_reports_through_dagster_pipes(data: Path, tmp_path: Path) -> None:
    job = _job(tmp_path, data, None, epochs=2, augment={})
    messages: list[Any] = []

    @asset
    def trained_encoder(context, pipes: PipesSubprocessClient) -> Any:
        invocation = pipes.run(command=_torchrun(job), context=context, env=_env(), cwd=str(REPO))
        messages.extend(invocation.get_custom_messages())
        return invocation.get_materialize_result()

    result = materialize([trained_encoder], resources={"pipes": PipesSubprocessClient()})
    assert result.success
    (mat,) = result.asset_materializations_for_node("trained_encoder")
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert meta["world_size"] == 2 and meta["steps"] == 2 * (64 // 16)
    assert meta["epochs_completed"] == 2 and Path(meta["encoder_path"]).exists()
    assert "embedding_std" in meta and "effective_rank" in meta
    # one message per epoch: rank 1 never opened Pipes
    epochs = [m for m in messages if isinstance(m, dict) and m.get("kind") == "epoch_metrics"]
    assert [m["metrics"]["epoch"] for m in epochs] == [0, 1]
    ranks = _results(tmp_path, 2)
    assert ranks[0]["model_sha256"] == ranks[1]["model_sha256"]
