"""The encoder directory: its file names, its one writer and its reader.

Why a module of its own: an encoder is `encoder.safetensors` (the backbone's `state_dict`) plus
`encoder.json` (backbone name and constructor kwargs, `out_dim`, the `preprocessing` the weights
expect, metrics, lineage, and `weights_sha256`). The training loop (`ssl_assets.ml.train`)
writes it through `save_encoder`, as do encoders that did not come out of training (a randomly
initialised baseline, test fixtures), and several consumers (embeddings, probes, fine-tuning,
inference) need to turn that pair back into a module without importing the training stack.

safetensors holds plain tensors only, so loading never unpickles code; the backbone is rebuilt
from its recorded name/kwargs with `build_backbone` and the weights are loaded strictly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from ssl_assets.atomic import file_sha256, write_atomic
from ssl_assets.ml.backbones import build_backbone

#: the encoder directory's file names: every writer and reader of an encoder uses these
ENCODER_WEIGHTS = "encoder.safetensors"
ENCODER_META = "encoder.json"


def save_encoder(backbone: nn.Module, meta: Mapping[str, Any], out_dir: str | Path) -> Path:
    """Write `backbone` as `encoder.safetensors` + `encoder.json` in `out_dir`.

    `meta` must name `backbone` (a `build_backbone` name) and may give `backbone_kwargs`;
    `out_dim` and `preprocessing` are filled in from the module and `weights_sha256` from the
    written file; every other key of `meta` is recorded as given, between them. The JSON is
    written last, so its presence means the weights are complete. Returns the path of
    `encoder.json`.
    """
    if "backbone" not in meta:
        raise ValueError("meta must name the backbone (a build_backbone name)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / ENCODER_WEIGHTS
    tensors = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    write_atomic(weights, lambda p: save_file(tensors, str(p)))
    derived = ("backbone", "backbone_kwargs", "out_dim", "preprocessing", "weights_sha256")
    full = {
        "backbone": meta["backbone"],
        "backbone_kwargs": meta.get("backbone_kwargs", {}),
        "out_dim": int(backbone.out_dim),  # type: ignore[arg-type]
        "preprocessing": dict(backbone.preprocessing),  # type: ignore[arg-type]
        **{k: v for k, v in meta.items() if k not in derived},
        "weights_sha256": file_sha256(weights),
    }
    meta_path = out / ENCODER_META
    write_atomic(meta_path, lambda p: p.write_text(json.dumps(full, default=str)))
    return meta_path


def build_from_meta(meta: Mapping[str, Any]) -> nn.Module:
    """A freshly initialised backbone of the architecture `meta` records (weights not loaded).

    Also the "random encoder" baseline: same architecture and preprocessing, no training.
    """
    return build_backbone(str(meta["backbone"]), **dict(meta.get("backbone_kwargs") or {}))


def load_encoder(out_dir: str | Path, verify: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the encoder saved in `out_dir`; returns `(backbone in eval mode, meta)`.

    With `verify`, the weights' SHA-256 is checked against `encoder.json`, so a half-copied or
    swapped weights file fails here instead of giving silently wrong features; an
    `encoder.json` that records no `weights_sha256` is refused too (deleting the line must not
    switch the check off). Pass `verify=False` to load weights you trust anyway.
    """
    out = Path(out_dir)
    meta_path, weights = out / ENCODER_META, out / ENCODER_WEIGHTS
    if not meta_path.is_file() or not weights.is_file():
        raise FileNotFoundError(f"{out} has no {ENCODER_META} + {ENCODER_WEIGHTS}")
    meta = json.loads(meta_path.read_text())
    expected = meta.get("weights_sha256")
    if verify and not expected:
        raise ValueError(f"{meta_path} records no weights_sha256: {weights} cannot be verified")
    if verify and file_sha256(weights) != expected:
        raise ValueError(f"{weights}: SHA-256 differs from the one recorded in {meta_path}")
    backbone = build_from_meta(meta)
    backbone.load_state_dict(load_file(str(weights)), strict=True)
    recorded = meta.get("preprocessing")
    if recorded:  # the recorded preprocessing wins over the constructor's default
        backbone.preprocessing = dict(recorded)
    backbone.eval()
    return backbone, meta
