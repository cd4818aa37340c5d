"""What defines a training run, and the identity of a run that resumes keys on.

Why a module of its own: the training loop, its process entry point (`entrypoint`, which reads
the config from a JSON job file) and the Dagster asset that launches runs (which names the
checkpoint directory after `config_hash`) all need the config without the loop. A run is
identified by `config_hash(cfg, data_fingerprint)`: the config minus the fields that only change
how a run is operated (checkpoint cadence, thread count, monitor subset sizes), the curated-data
fingerprint and the warm-start weights' content, so a retried run finds its own checkpoints
while a changed config or data snapshot starts fresh.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssl_assets.atomic import file_sha256
from ssl_assets.ml.augment import AUGMENTATION_PRESETS

#: config fields that change how a run is operated, not what it computes: left out of the hash
_OPERATIONAL_FIELDS = frozenset(
    {
        "checkpoint_every",
        "keep_checkpoints",
        "num_threads",
        "prefetch",
        "monitor_samples",
        "knn_samples",
        "in_memory",
    }
)


def plain_json(value: Any) -> Any:
    """JSON-canonical form (tuples become lists), so a value survives a JSON round trip."""
    return json.loads(json.dumps(value))


@dataclass
class TrainConfig:
    """Everything that defines a training run; `to_dict` / `from_dict` round-trip through JSON.

    `batch_size` is the global batch per optimiser step: each of `world_size` ranks runs
    `accumulate` micro-batches of `batch_size // (world_size * accumulate)` images.
    `max_steps`, when set, overrides `epochs`. `warmup_steps`, when set, overrides
    `warmup_epochs`. `precision`: "auto" (bf16 on CUDA, fp32 on CPU), "fp32" or "bf16".
    `augmentation` names a preset of `augment.build_augmentation` (default: the method's own,
    SimCLR's for a hybrid); `augment` holds its keyword overrides. `image_size` defaults to the
    backbone's `preprocessing["input_size"]`. `num_threads=0` keeps torch's default.
    `prefetch` augments the next micro-batch in a worker thread while the current one trains
    (same values either way) when that thread has a core to itself: on CUDA, or when torch's
    intra-op threads leave a CPU core spare (measured on 2 cores: with 1 torch thread prefetch
    lifts the loop from 0.82 to 0.98 of the bare step; with 2 it costs 10 %). `deterministic`
    sets process-wide torch flags (`use_deterministic_algorithms`), meant for a dedicated
    training process.
    """

    method: str = "simclr"
    objective: dict[str, Any] = field(default_factory=dict)
    backbone: str = "small_cnn"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    augmentation: str | None = None
    augment: dict[str, Any] = field(default_factory=dict)
    image_size: int | None = None
    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 256
    optimizer: str = "adamw"
    lr: float = 2e-3
    min_lr: float = 0.0
    weight_decay: float = 0.05
    momentum: float = 0.9
    warmup_steps: int | None = None
    warmup_epochs: float = 2.0
    grad_clip: float | None = None
    precision: str = "auto"
    accumulate: int = 1
    grad_checkpointing: bool = False
    channels_last: bool = False
    compile: bool = False
    prefetch: bool = True
    in_memory: bool | None = None
    seed: int = 0
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    num_threads: int = 0
    deterministic: bool = False
    device: str = "auto"
    monitor_samples: int = 1024
    knn_samples: int = 2000
    knn_k: int = 20
    knn_temperature: float = 0.07

    def __post_init__(self) -> None:
        self.objective = plain_json(self.objective)
        self.backbone_kwargs = plain_json(self.backbone_kwargs)
        self.augment = plain_json(self.augment)
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be adamw or sgd, got {self.optimizer!r}")
        if self.accumulate < 1 or self.batch_size < 1:
            raise ValueError("batch_size and accumulate must be positive")
        if self.max_steps is None and self.epochs < 1:
            raise ValueError("set epochs >= 1 or max_steps")
        if self.keep_checkpoints < 1:
            raise ValueError("keep_checkpoints must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return plain_json(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        return cls(**dict(data))

    @property
    def augmentation_preset(self) -> str:
        if self.augmentation is not None:
            return self.augmentation
        return self.method if self.method in AUGMENTATION_PRESETS else "simclr"


def config_hash(
    cfg: TrainConfig, data_fingerprint: str, *, warm_start: str | Path | None = None
) -> str:
    """16 hex digits identifying a run: the config (minus operational fields such as
    `checkpoint_every` or `num_threads`), the curated-data fingerprint and, if given, the
    content of the warm-start weights file. Use it to name the checkpoint directory."""
    payload = {k: v for k, v in cfg.to_dict().items() if k not in _OPERATIONAL_FIELDS}
    h = hashlib.sha256(json.dumps(payload, sort_keys=True).encode())
    h.update(str(data_fingerprint).encode())
    if warm_start is not None:
        h.update(file_sha256(warm_start).encode())
    return h.hexdigest()[:16]
