"""A markdown model card next to the model: what it is, what it was trained on, how good, where
it fails.

Why: the weights directory is what gets copied around and deployed; a card travelling with it
(Mitchell et al., 2019, "Model Cards for Model Reporting", arXiv:1810.03993) keeps the data
lineage, the audits the data passed, the evaluation results (including subgroup gaps,
calibration and robustness, not only accuracy) and the known limits attached to the artefact.

`write_model_card(model_dir, info)` renders whatever the caller passes; known sections come in
a fixed order, any other key is rendered after them. Values render generically: a mapping as
a bullet list (nested one level as sub-bullets, deeper as inline JSON), a list of mappings as
a table, other lists as bullets. Facts recorded in `model.json` (architecture, classes,
preprocessing) are filled in when the caller does not give them (from `encoder.json` for a
bare encoder directory).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ssl_assets.ml.encoder_io import ENCODER_META
from ssl_assets.ml.evaluate.model_io import MODEL_META

MODEL_CARD = "MODEL_CARD.md"

#: (key in `info`, heading), in card order
SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"),
    ("intended_use", "Intended use"),
    ("model", "Model"),
    ("data", "Data lineage"),
    ("audits", "Data audits"),
    ("training", "Training"),
    ("metrics", "Evaluation (test split)"),
    ("label_efficiency", "Label efficiency"),
    ("subgroups", "Subgroup performance"),
    ("calibration", "Calibration"),
    ("robustness", "Robustness"),
    ("promotion", "Promotion decision"),
    ("limitations", "Limitations"),
)

DEFAULT_LIMITATIONS = (
    "Evaluated only on the held-out test split of the curated data; performance on images from "
    "other sources, devices or populations is unknown.",
    "Inputs are decoded and canonicalised as recorded in model.json (resolution, aspect "
    "handling, normalisation); feeding images prepared differently invalidates the metrics.",
    "Subgroup results cover only the attributes that were recorded; unrecorded groups may fare "
    "worse.",
    "Probabilities are calibrated only as well as the reported ECE says; do not threshold them "
    "without checking calibration on your own data.",
)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (Mapping, list, tuple)):
        return f"`{json.dumps(value, default=str)}`"
    return str(value).replace("\n", " ")


def _table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [str(k) for k in row if str(k) not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [_fmt(row.get(c, "")).replace("|", "\\|") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _render(value: Any) -> list[str]:
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # a pandas DataFrame
        value = value.to_dict("records")
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        lines = []
        for key, item in value.items():
            if (
                isinstance(item, Mapping)
                and item
                and all(not isinstance(v, Mapping) for v in item.values())
            ):
                lines.append(f"- **{key}**:")
                lines += [f"  - {k}: {_fmt(v)}" for k, v in item.items()]
            else:
                lines.append(f"- **{key}**: {_fmt(item)}")
        return lines
    if isinstance(value, Sequence) and value and all(isinstance(v, Mapping) for v in value):
        return _table(value)  # type: ignore[arg-type]
    if isinstance(value, Sequence):
        return [f"- {_fmt(v)}" for v in value]
    return [_fmt(value)]


def _from_model_json(model_dir: Path) -> dict[str, Any]:
    path = model_dir / MODEL_META
    if not path.is_file():
        path = model_dir / ENCODER_META
    if not path.is_file():
        return {}
    meta = json.loads(path.read_text())
    model = {
        k: meta[k]
        for k in ("backbone", "backbone_kwargs", "out_dim", "num_classes", "class_names")
        if k in meta
    }
    for k in ("canonical", "preprocessing", "weights_sha256"):
        if k in meta:
            model[k] = meta[k]
    return {"model": model} if model else {}


def write_model_card(model_dir: str | Path, info: Mapping[str, Any]) -> Path:
    """Write `MODEL_CARD.md` into `model_dir` from `info` (see the module docstring for the
    known keys; `title` names the card) and return its path. Default limitations are always
    listed after the caller's."""
    root = Path(model_dir)
    root.mkdir(parents=True, exist_ok=True)
    merged: dict[str, Any] = {**_from_model_json(root), **dict(info)}
    title = str(merged.pop("title", f"Model card: {root.name}"))
    lines = [f"# {title}", ""]
    known = {key for key, _ in SECTIONS}
    limitations = list(merged.get("limitations") or [])
    if isinstance(merged.get("limitations"), str):
        limitations = [merged["limitations"]]
    merged["limitations"] = limitations + [d for d in DEFAULT_LIMITATIONS if d not in limitations]
    sections = [(key, heading) for key, heading in SECTIONS if key in merged]
    sections += [(key, key.replace("_", " ").capitalize()) for key in merged if key not in known]
    for key, heading in sections:
        value = merged[key]
        if value is None or (isinstance(value, (Mapping, list, tuple, str)) and not value):
            continue
        lines += [f"## {heading}", "", *_render(value), ""]
    path = root / MODEL_CARD
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path


def card_info(
    model: Mapping[str, Any],
    encoder_lineage: Mapping[str, Any],
    curated: Sequence[Mapping[str, Any]],
    gates: Sequence[Mapping[str, Any]],
    reasons: Sequence[str],
) -> dict[str, Any]:
    """What the champion's card says: lineage down to the curated data, metrics, the decision.

    `model` is the registry row (model_id, reason, lineage and metrics as JSON);
    `encoder_lineage` the lineage of the encoder behind it; `curated` the included/total images
    per split; `gates` passed/total per asset; `reasons` the promotion decision's lines."""
    lineage = json.loads(model["lineage"] or "{}")
    # where the weights started: the fine-tuning's own start, else the encoder's (source, sha256)
    start = lineage.get("init_from") or encoder_lineage.get("init_from")
    return {
        "title": f"ssl-assets champion {model['model_id']}",
        "summary": model["reason"],
        "model": {
            "fine-tuned": model["model_id"],
            "encoder": lineage.get("encoder"),
            "start": start
            or (
                f"warm start from {encoder_lineage['warm_start']}"
                if encoder_lineage.get("warm_start")
                else "random initialisation"
            ),
        },
        "data": {**encoder_lineage, "curated_images": list(curated)},
        "audits": {"gates (passed / total) per asset": list(gates)},
        "metrics": {
            k: v
            for k, v in json.loads(model["metrics"] or "{}").items()
            if isinstance(v, int | float | str)
        },
        "promotion": list(reasons),
    }
