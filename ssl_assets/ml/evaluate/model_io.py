"""The fine-tuned model directory: `model.safetensors` + `model.json`.

Why this format: a served model must be rebuilt exactly as it was evaluated, without
unpickling code and without the training stack. `model.safetensors` holds plain tensors (the
`Classifier` state_dict: `backbone.*` and `head.*`; LoRA updates merged into the backbone
weights, so loading needs no LoRA code); `model.json` records everything else the numbers
depend on: backbone name and constructor kwargs, the canonical spec the images were decoded
with (resolution, aspect handling), the normalisation (`preprocessing`), the class names in
head order, the fine-tuning strategy, metrics and lineage, and the weights' SHA-256. The JSON
is written last (temp file + rename), so its presence means the weights beside it are complete.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from ssl_assets.atomic import file_sha256, write_atomic
from ssl_assets.data.canonical import CanonicalSpec, check_resolution
from ssl_assets.ml.backbones import build_backbone
from ssl_assets.ml.evaluate.lora import LORA_TYPES, merge_lora
from ssl_assets.ml.evaluate.supervised import Classifier

MODEL_WEIGHTS = "model.safetensors"
MODEL_META = "model.json"
MODEL_FORMAT = "ssl-assets-classifier/1"


def canonical_to_dict(spec: CanonicalSpec | Mapping[str, Any]) -> dict[str, Any]:
    """`CanonicalSpec` -> `{"resolution", "aspect"}` (a mapping is validated the same way)."""
    if isinstance(spec, CanonicalSpec):
        return dataclasses.asdict(spec)
    return dataclasses.asdict(canonical_from_dict(spec))


def canonical_from_dict(data: Mapping[str, Any]) -> CanonicalSpec:
    """The `canonical` record of a model directory as a spec; the resolution must be a whole
    number in 1..MAX_RESOLUTION (`ssl_assets.data.canonical`), so a malformed model.json cannot
    make serving decode each image to an enormous array."""
    if not isinstance(data, Mapping) or "resolution" not in data:
        raise ValueError(f"canonical spec needs a resolution: {data!r}")
    aspect = str(data.get("aspect", "pad"))
    if aspect not in ("pad", "center_crop", "stretch"):
        raise ValueError(f"unknown aspect handling {aspect!r}")
    resolution = check_resolution(data["resolution"], "canonical resolution")
    return CanonicalSpec(resolution=resolution, aspect=aspect)  # type: ignore[arg-type]


def save_finetuned(
    model: Classifier,
    out_dir: str | Path,
    *,
    backbone: str,
    class_names: Sequence[str],
    canonical: CanonicalSpec | Mapping[str, Any],
    backbone_kwargs: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    info: Mapping[str, Any] | None = None,
) -> Path:
    """Write `model` (LoRA merged if present) to `out_dir`; returns the `model.json` path.

    `backbone` / `backbone_kwargs`: how to rebuild the encoder (`build_backbone`), as recorded
    in the encoder's `encoder.json`. `canonical`: the spec the training images were
    canonicalised with; serving decodes new images the same way. `info` is stored as is
    (strategy, lineage, ...).
    """
    if len(class_names) != model.num_classes:
        raise ValueError(f"{len(class_names)} class names for a {model.num_classes}-class head")
    if any(isinstance(m, LORA_TYPES) for m in model.modules()):
        model = merge_lora(model)  # type: ignore[assignment]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / MODEL_WEIGHTS
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_atomic(weights, lambda p: save_file(tensors, str(p)))
    meta = {
        "format": MODEL_FORMAT,
        "backbone": backbone,
        "backbone_kwargs": dict(backbone_kwargs or {}),
        "out_dim": int(model.backbone.out_dim),  # type: ignore[arg-type]
        "num_classes": model.num_classes,
        "class_names": [str(c) for c in class_names],
        "canonical": canonical_to_dict(canonical),
        "preprocessing": dict(model.preprocessing),
        "metrics": dict(metrics or {}),
        "info": dict(info or {}),
        "weights_sha256": file_sha256(weights),
    }
    meta_path = out / MODEL_META
    write_atomic(
        meta_path, lambda p: p.write_text(json.dumps(meta, indent=2, default=_json_default))
    )
    return meta_path


def _json_default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "tolist"):  # numpy scalars / arrays
        return value.tolist()
    return str(value)


def load_finetuned(model_dir: str | Path, verify: bool = True) -> tuple[Classifier, dict[str, Any]]:
    """Rebuild the classifier saved by `save_finetuned`; returns `(model in eval mode, meta)`.

    With `verify`, a weights file whose SHA-256 differs from `model.json`'s is refused.
    """
    root = Path(model_dir)
    meta_path, weights = root / MODEL_META, root / MODEL_WEIGHTS
    if not meta_path.is_file() or not weights.is_file():
        raise FileNotFoundError(f"{root} has no {MODEL_META} + {MODEL_WEIGHTS}")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != MODEL_FORMAT:
        raise ValueError(f"{meta_path}: unknown format {meta.get('format')!r}")
    if verify and file_sha256(weights) != meta.get("weights_sha256"):
        raise ValueError(f"{weights}: SHA-256 differs from the one recorded in {meta_path}")
    backbone = build_backbone(meta["backbone"], **meta.get("backbone_kwargs", {}))
    model = Classifier(backbone, int(meta["num_classes"]), meta["preprocessing"], seed=None)
    model.load_state_dict(load_file(str(weights)), strict=True)
    model.eval()
    return model, meta
