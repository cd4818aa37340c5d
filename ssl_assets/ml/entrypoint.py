"""Process entry point of a training run: `python -m ssl_assets.ml.entrypoint --job job.json`.

Why a separate process with a JSON job file: the Dagster asset launches training through Dagster
Pipes (`PipesSubprocessClient`), either as one Python process or under
`torchrun --nproc_per_node=N --max-restarts 0 -m ssl_assets.ml.entrypoint --job job.json` for
data-parallel training. The job file carries everything a rank needs (the `TrainConfig`, the
train / val parts of the curated arrays, the checkpoint and output directories, a warm-start
file), so every rank reads the same plain data and no orchestration object crosses the process
boundary.

What it does:

- When torchrun's environment is present (`WORLD_SIZE`, `RANK`, `MASTER_ADDR`, ...) it
  initialises `torch.distributed` from it: gloo on CPU, NCCL on CUDA (each rank on
  `cuda:LOCAL_RANK`). On CPU with no explicit `num_threads`, each rank gets an equal share of
  the cores. `train` then wraps the student (backbone + objective heads, built and teachers
  copied before wrapping) in DDP.
- Every rank inherits the Pipes environment variables, but only rank 0 opens
  `dagster_pipes.open_dagster_pipes()` (imported lazily, and only when
  `DAGSTER_PIPES_CONTEXT` is set; otherwise the run is standalone and logs to stderr). Rank 0
  logs each epoch's metrics (a log line plus a custom message with the metrics dict) and reports
  one asset materialization with the final metrics at the end. Other ranks never touch Pipes,
  so Dagster sees exactly one stream of events.
- `result_dir` (optional, in the job) receives `result_rank<r>.json` from every rank: the
  train result plus SHA-256 digests of that rank's final weights, which is how tests (and
  operators) check that ranks ended identical.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ssl_assets.atomic import write_atomic
from ssl_assets.ml import distributed
from ssl_assets.ml.config import TrainConfig
from ssl_assets.ml.train import TrainResult, train

log = logging.getLogger("ssl_assets.ml.entrypoint")

PIPES_CONTEXT_ENV = "DAGSTER_PIPES_CONTEXT"


@dataclass
class TrainJob:
    """What one training run needs, as written to `job.json` by the launching asset.

    `train` parts are `[path, rows]` (rows `null` = all rows); `val` parts are
    `[path, rows, labels]`. `data_fingerprint` is the curated snapshot's identity (computed
    from the parts when absent); `result_dir` is optional (per-rank result files)."""

    config: TrainConfig
    train: list[list[Any]]
    checkpoint_dir: str
    output_dir: str
    val: list[list[Any]] | None = None
    warm_start: str | None = None
    data_fingerprint: str | None = None
    stop_after_steps: int | None = None
    result_dir: str | None = None
    extra_metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "train": [_plain_part(p) for p in self.train],
            "val": [_plain_part(p) for p in self.val] if self.val is not None else None,
            "checkpoint_dir": str(self.checkpoint_dir),
            "output_dir": str(self.output_dir),
            "warm_start": str(self.warm_start) if self.warm_start is not None else None,
            "data_fingerprint": self.data_fingerprint,
            "stop_after_steps": self.stop_after_steps,
            "result_dir": str(self.result_dir) if self.result_dir is not None else None,
            "extra_metadata": self.extra_metadata,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainJob:
        data = dict(data)
        data["config"] = TrainConfig.from_dict(data["config"])
        return cls(**data)

    def write(self, path: str | Path) -> Path:
        """Write the job as JSON (temp file + rename)."""
        path = Path(path)
        write_atomic(path, lambda tmp: tmp.write_text(json.dumps(self.to_dict(), indent=1)))
        return path

    @classmethod
    def read(cls, path: str | Path) -> TrainJob:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _plain_part(part: Sequence[Any]) -> list[Any]:
    out: list[Any] = [str(part[0])]
    for value in part[1:]:
        out.append(None if value is None else [int(v) for v in value])
    return out


# --------------------------------------------------------------------------- distributed


def launched_by_torchrun() -> bool:
    """True when torchrun's rendezvous variables are in the environment."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> bool:
    """Initialise the default process group from torchrun's environment (gloo on CPU, NCCL on
    CUDA); returns whether a group was initialised."""
    if not launched_by_torchrun() or dist.is_initialized():
        return dist.is_initialized()
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


def _cpu_thread_share(cfg: TrainConfig) -> TrainConfig:
    """Give each local rank an equal share of the cores unless `num_threads` is set."""
    if cfg.num_threads > 0 or not launched_by_torchrun():
        return cfg
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cfg.num_threads = max(1, (cores or 1) // max(local_world, 1))
    return cfg


# --------------------------------------------------------------------------- reporting


def _scalar_metadata(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in metrics.items()
        if isinstance(v, bool | int | float | str)
        and not (isinstance(v, float) and not math.isfinite(v))
    }


def run_job(
    job: TrainJob,
    pipes: Any | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Run `train` for `job` on this rank; with `pipes` (rank 0), stream metrics to Dagster."""
    cfg = _cpu_thread_share(job.config)

    def report_epoch(metrics: dict[str, Any]) -> None:
        scalars = _scalar_metadata(metrics)
        line = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in scalars.items()
        )
        if pipes is not None:
            pipes.log.info(f"epoch {metrics.get('epoch')}: {line}")
            pipes.report_custom_message({"kind": "epoch_metrics", "metrics": scalars})
        else:
            log.info("epoch %s: %s", metrics.get("epoch"), line)
        if on_epoch is not None:
            on_epoch(metrics)

    result = train(
        cfg,
        job.train,
        job.checkpoint_dir,
        val_data=job.val,
        warm_start=job.warm_start,
        on_epoch=report_epoch,
        stop_after_steps=job.stop_after_steps,
        output_dir=job.output_dir,
        data_fingerprint=job.data_fingerprint,
    )
    if job.result_dir is not None:
        _write_rank_result(job, result)
    if pipes is not None:
        if result.completed:
            metadata = {
                **_scalar_metadata(result.metrics),
                "steps": result.step,
                "epochs_completed": result.epoch,
                "config_hash": result.config_hash,
                "world_size": distributed.world_size(),
                "resumed_from_step": result.resumed_from_step
                if result.resumed_from_step is not None
                else -1,
                "encoder_path": str(result.encoder_path),
                "encoder_metadata_path": str(result.metadata_path),
                "method": cfg.method,
                "backbone": cfg.backbone,
                "loss_history": [m.get("loss") for m in result.history],
                **job.extra_metadata,
            }
            # the run hash identifies config + data snapshot + warm start: the encoder's version
            pipes.report_asset_materialization(metadata=metadata, data_version=result.config_hash)
        else:
            pipes.log.warning(f"stopped early at step {result.step} of {result.total_steps}")
    return result


def _write_rank_result(job: TrainJob, result: TrainResult) -> None:
    out = Path(str(job.result_dir))
    out.mkdir(parents=True, exist_ok=True)
    rank = distributed.rank()
    record: dict[str, Any] = {
        "rank": rank,
        "world_size": distributed.world_size(),
        "completed": result.completed,
        "step": result.step,
        "epoch": result.epoch,
        "config_hash": result.config_hash,
        "resumed_from_step": result.resumed_from_step,
        "history": result.history,
        "encoder_path": str(result.encoder_path) if result.encoder_path else None,
        "model_sha256": result.model_sha256,
    }
    write_atomic(
        out / f"result_rank{rank}.json", lambda tmp: tmp.write_text(json.dumps(record, indent=1))
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True, help="path of the job JSON (TrainJob)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s"
    )
    job = TrainJob.read(args.job)
    initialised = init_distributed(job.config.device)
    try:
        if distributed.rank() == 0 and os.environ.get(PIPES_CONTEXT_ENV):
            from dagster_pipes import open_dagster_pipes  # light; rank 0 only

            with open_dagster_pipes() as pipes:
                run_job(job, pipes)
        else:
            run_job(job)
    finally:
        if initialised and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    from ssl_assets.ml.launch import die_with_parent

    die_with_parent()  # under torchrun: a worker dies with its agent (ssl_assets.ml.launch)
    sys.exit(main())
