"""Checkpoints of a training run: atomic directories that resume can trust.

Why this format: a checkpoint is a directory `step_NNNNNNNNN/` holding `state.safetensors`
(every tensor: model with its momentum teacher, MoCo queue, DINO centre, BatchNorm statistics,
and the optimiser state flattened to `optim/<param>/<key>`, so loading never unpickles code) and
`state.json` (step, epoch, position in the epoch, optimiser hyper-parameters, per-rank RNG
states, metric history). Both are written into a hidden temporary directory, fsynced, and the
directory is renamed into place, so the pair is always consistent and a crash mid-write leaves
only a `.tmp-*` directory that resume ignores (and `clean_stale` removes). Old checkpoints are
renamed away before deletion for the same reason.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from ssl_assets.ml.config import plain_json

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
_CKPT_RE = re.compile(r"^step_(\d{9})$")
_TENSORS = "state.safetensors"
_META = "state.json"


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_json(path: Path, data: Any) -> None:
    with path.open("w") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())


def _write_tensors(path: Path, tensors: Mapping[str, Tensor]) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))
    with path.open("rb") as fh:
        os.fsync(fh.fileno())


def list_checkpoints(checkpoint_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints `(step, path)`, oldest first. In-progress `.tmp-*` and `.old-*`
    directories are never listed; a `step_*` directory missing a file is skipped too."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = _CKPT_RE.match(child.name)
        if m and (child / _TENSORS).is_file() and (child / _META).is_file():
            found.append((int(m.group(1)), child))
    return sorted(found)


def save_checkpoint(
    checkpoint_dir: str | Path,
    step: int,
    tensors: Mapping[str, Tensor],
    meta: Mapping[str, Any],
    keep: int = 2,
) -> Path:
    """Write `step_<step>/` atomically (temp dir, fsync, rename) and keep the newest `keep`."""
    root = Path(checkpoint_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:09d}"
    tmp = root / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _write_tensors(tmp / _TENSORS, tensors)
        _write_json(tmp / _META, {**meta, "step": step})
        _fsync_dir(tmp)
        if final.exists():  # same step again (e.g. re-run after the final checkpoint): replace
            _remove_dir(final)
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for _, old in list_checkpoints(root)[:-keep]:
        _remove_dir(old)
    return final


def _remove_dir(path: Path) -> None:
    """Rename out of the `step_*` namespace first, so a crash mid-delete leaves no partial
    checkpoint behind."""
    trash = path.with_name(f".old-{path.name}-{uuid.uuid4().hex[:8]}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def clean_stale(checkpoint_dir: Path) -> None:
    """Remove `.tmp-*` / `.old-*` directories left by a crash mid-write or mid-delete."""
    if checkpoint_dir.is_dir():
        for child in checkpoint_dir.iterdir():
            if child.is_dir() and child.name.startswith((".tmp-", ".old-")):
                shutil.rmtree(child, ignore_errors=True)


def load_latest_checkpoint(
    checkpoint_dir: str | Path, max_step: int | None = None
) -> tuple[int, dict[str, Tensor], dict[str, Any]] | None:
    """`(step, tensors, meta)` of the newest readable checkpoint (at most `max_step`), or None.
    A checkpoint that fails to parse is skipped with a warning, falling back to the previous."""
    for step, path in reversed(list_checkpoints(checkpoint_dir)):
        if max_step is not None and step > max_step:
            continue
        try:
            meta = json.loads((path / _META).read_text())
            if meta.get("format") != CHECKPOINT_FORMAT or meta.get("step") != step:
                raise ValueError(f"unexpected format/step in {path / _META}")
            tensors = load_file(str(path / _TENSORS))
        except Exception as exc:  # corrupt checkpoint: fall back to an older one
            log.warning("ignoring unreadable checkpoint %s: %s", path, exc)
            continue
        return step, tensors, meta
    return None


def flatten_optimizer_state(
    state: Mapping[str, Any], prefix: str = "optim"
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split `optimizer.state_dict()` into tensors `{prefix}/<param>/<key>` (for safetensors)
    and the JSON-able rest (param groups and non-tensor per-parameter values)."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            if isinstance(value, Tensor):
                tensors[f"{prefix}/{pid}/{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": plain_json(state["param_groups"]), "scalars": scalars}


def unflatten_optimizer_state(
    tensors: Mapping[str, Tensor], meta: Mapping[str, Any], prefix: str = "optim"
) -> dict[str, Any]:
    """Inverse of `flatten_optimizer_state`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        head, _, rest = name.partition("/")
        if head != prefix:
            continue
        pid, _, key = rest.partition("/")
        state.setdefault(int(pid), {})[key] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


def rng_state() -> dict[str, Any]:
    """This process's torch (and, once initialised, CUDA) RNG state, base64 for JSON."""
    state: dict[str, Any] = {"torch": base64.b64encode(torch.get_rng_state().numpy()).decode()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = base64.b64encode(torch.cuda.get_rng_state().numpy()).decode()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    raw = np.frombuffer(base64.b64decode(state["torch"]), dtype=np.uint8).copy()
    torch.set_rng_state(torch.from_numpy(raw))
    if "cuda" in state and torch.cuda.is_available():
        raw = np.frombuffer(base64.b64decode(state["cuda"]), dtype=np.uint8).copy()
        torch.cuda.set_rng_state(torch.from_numpy(raw))
