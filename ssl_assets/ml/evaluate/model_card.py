"""A markdown model card next to the model: what it is, what it was trained on, how good, where
it fails.

Why: the weights directory is what gets copied around and deployed; a card travelling with it
(Mitchell et al., 2019, "Model Cards for Model Reporting", arXiv:1810.03993) keeps the data
lineage, the audits the data passed, the evaluation results (including subgroup gaps,
calibration and robustness, not only accuracy) and the known limits attached to the artefact.

`write_model_card(model_dir, info)` renders whatever the caller passes; known sections come in
a fixed order, any other key is rendered after them. Values render generically and never as
JSON: a string as prose, a mapping as a two-column field table (nested values written out as
`key: value; ...`), a list of mappings or a DataFrame as a table, other lists as bullets, and
a `Blocks` list as its parts one after another. Every table goes through
`ssl_assets.markdown.markdown_table`, so no value can split a column. Facts recorded in
`model.json` (architecture, classes, preprocessing) are filled in when the caller does not give
them (from `encoder.json` for a bare encoder directory).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ssl_assets.markdown import markdown_table
from ssl_assets.ml.encoder_io import ENCODER_META
from ssl_assets.ml.evaluate.metrics import accuracy_interval
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
    ("per_class", "Per class"),
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


class Blocks(list):
    """A section made of several parts (prose, a field table, a table of rows), rendered one
    after another."""


def _fmt(value: Any) -> str:
    """One value as a person reads it: numbers rounded, no JSON."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) or "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value) or "none"
    if value is None:
        return "none"
    return str(value)


def _table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [str(k) for k in row if str(k) not in columns]
    cells = [{c: _fmt(row.get(c, "")) for c in columns} for row in rows]
    return markdown_table(pd.DataFrame(cells, columns=columns)).splitlines()


def _render(value: Any) -> list[str]:
    if isinstance(value, Blocks):
        lines: list[str] = []
        for part in value:
            if part is None or (isinstance(part, (Mapping, list, str)) and not part):
                continue
            lines += [*_render(part), ""]
        return lines[:-1]
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # a pandas DataFrame
        value = value.to_dict("records")
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):  # a field table: one row per key
        return _table([{"field": k, "value": v} for k, v in value.items()])
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
    recorded = _from_model_json(root)
    merged: dict[str, Any] = {**recorded, **dict(info)}
    if isinstance(info.get("model"), Mapping) and "model" in recorded:
        merged["model"] = {**dict(info["model"]), **recorded["model"]}
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


def metrics_rows(report: Mapping[str, Any], confidence: float = 0.95) -> list[dict[str, Any]]:
    """The headline test metrics of an evaluation report, with the accuracy's interval."""
    n = int(report.get("n") or 0)
    accuracy = float(report.get("accuracy", math.nan))
    low, high = accuracy_interval(accuracy, n, confidence)
    robust = (report.get("robustness") or {}).get("mean_corrupted_accuracy")
    rows = [
        {"metric": "test images", "value": n},
        {"metric": "accuracy", "value": accuracy},
        {
            "metric": f"accuracy, {confidence:.0%} interval (Wilson)",
            "value": f"{low:.3f} – {high:.3f}",
        },
        {"metric": "expected calibration error", "value": report.get("ece")},
        {"metric": "largest subgroup accuracy gap", "value": report.get("max_subgroup_gap")},
        {"metric": "mean accuracy under corruptions", "value": robust},
    ]
    return [r for r in rows if r["value"] is not None]


def per_class_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {"class": k, "test accuracy": float(v)}
        for k, v in (report.get("per_class_accuracy") or {}).items()
    ]


def robustness_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per corruption and severity (each corruption has its own severities)."""
    rows = []
    for kind, by_severity in (report.get("robustness") or {}).items():
        if isinstance(by_severity, Mapping):
            rows += [
                {"corruption": kind, "severity": str(k), "test accuracy": float(v)}
                for k, v in by_severity.items()
            ]
    return rows


def subgroup_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for attribute, entry in (report.get("subgroups") or {}).items():
        for group, stats in (entry.get("groups") or {}).items():
            rows.append(
                {
                    "attribute": attribute,
                    "subgroup": group,
                    "test images": int(stats.get("n", 0)),
                    "test accuracy": float(stats.get("accuracy", math.nan)),
                }
            )
    return rows


def decision_rows(decision: Any, test_interval: tuple[float, float] | None = None) -> list[dict]:
    """A promotion decision as a person checks it: each rule with its value, its limit and
    whether it passed; then the accuracies it compared (test reported, never used)."""
    policy, boot = decision.policy, decision.bootstrap
    champ = decision.champion_val_accuracy
    rows = [
        {
            "rule": "challenger not worse (val accuracy difference)",
            "value": (
                f"{boot.mean_diff:+.3f}, {boot.confidence:.0%} paired-bootstrap interval "
                f"{boot.low:+.3f} to {boot.high:+.3f}"
                if boot is not None
                else "no champion to compare with"
            ),
            "limit": f"lower bound at least -{policy.tolerance:.3f} (the tolerance)",
            "passed": bool(decision.checks.get("not_worse", True)),
        },
        {
            "rule": "largest subgroup accuracy gap (val)",
            "value": "not checked"
            if decision.challenger_subgroup_gap is None
            else f"{decision.challenger_subgroup_gap:.3f}",
            "limit": f"at most {policy.max_subgroup_gap:.3f}",
            "passed": bool(decision.checks.get("subgroup_gap", True)),
        },
        {
            "rule": "encoder passed the collapse check",
            "value": "yes" if decision.checks.get("collapse_check") else "no",
            "limit": "required",
            "passed": bool(decision.checks.get("collapse_check", True)),
        },
        {
            "rule": "challenger val accuracy",
            "value": f"{decision.challenger_val_accuracy:.3f}",
            "limit": "",
            "passed": None,
        },
        {
            "rule": "champion val accuracy",
            "value": "no champion" if champ is None else f"{champ:.3f}",
            "limit": "",
            "passed": None,
        },
    ]
    test = decision.reported.get("test_accuracy")
    if test is not None:
        interval = f", 95% interval {test_interval[0]:.3f} – {test_interval[1]:.3f}"
        rows.append(
            {
                "rule": "challenger test accuracy (reported, never used to decide)",
                "value": f"{float(test):.3f}" + (interval if test_interval else ""),
                "limit": "",
                "passed": None,
            }
        )
    return rows


def _summary(model: Mapping[str, Any], report: Mapping[str, Any], encoder: Mapping[str, Any]):
    """The card's opening paragraph, in sentences."""
    lineage = json.loads(model["lineage"] or "{}")
    config = json.loads(model.get("config") or "{}") if isinstance(model.get("config"), str) else {}
    n = int(report.get("n") or 0)
    accuracy = float(report.get("accuracy", math.nan))
    low, high = accuracy_interval(accuracy, n)
    pieces = [
        f"{model['model_id']} classifies images with a linear head on the self-supervised "
        f"encoder {lineage.get('encoder')}, fine-tuned with the "
        f"{config.get('strategy', 'full')} strategy."
    ]
    if encoder.get("train_images"):
        pieces.append(
            f"The encoder was pretrained on {encoder['train_images']} curated, unlabeled train "
            f"images (catalog {encoder.get('catalog_version', 'n/a')}, data snapshot "
            f"{str(encoder.get('data_fingerprint', 'n/a'))[:12]})."
        )
    if n:
        pieces.append(
            f"On the held-out test split ({n} images) its accuracy is {accuracy:.3f} (95% "
            f"interval {low:.3f} to {high:.3f}) and its expected calibration error "
            f"{float(report.get('ece', math.nan)):.3f}."
        )
    pieces.append(f"Registry status: {model.get('status', 'n/a')}, {model['reason']}.")
    return " ".join(pieces)


def card_info(
    model: Mapping[str, Any],
    encoder_lineage: Mapping[str, Any],
    curated: Sequence[Mapping[str, Any]],
    gates: Sequence[Mapping[str, Any]],
    reasons: Sequence[str],
    *,
    decision: Any = None,
    label_efficiency: Any = None,
) -> dict[str, Any]:
    """What the champion's card says, in prose and tables: lineage down to the curated data,
    the audits it passed, test metrics with their interval, per class, per subgroup and under
    corruptions, the label-efficiency table of its encoder and the promotion decision.

    `model` is the registry row (model_id, reason, status, lineage, config and metrics as
    JSON); `encoder_lineage` the lineage of the encoder behind it; `curated` the included/total
    images per split; `gates` passed/total per asset; `reasons` the promotion decision's lines;
    `decision` the `PromotionDecision` itself; `label_efficiency` a table (one row per budget)."""
    lineage = json.loads(model["lineage"] or "{}")
    report = json.loads(model["metrics"] or "{}")
    n = int(report.get("n") or 0)
    interval = accuracy_interval(float(report.get("accuracy", math.nan)), n) if n else None
    return {
        "title": f"ssl-assets champion {model['model_id']}",
        "summary": _summary(model, report, encoder_lineage),
        "intended_use": "Classifying images like those of the curated data set it was trained "
        "and tested on, decoded and prepared as model.json records. Not for decisions about "
        "people without an evaluation on their own data.",
        "model": {
            "fine-tuned": model["model_id"],
            "encoder": lineage.get("encoder"),
            # where the weights started: the fine-tuning's own start, else the encoder's
            "start": lineage.get("init_from")
            or encoder_lineage.get("init_from")
            or (
                f"warm start from {encoder_lineage['warm_start']}"
                if encoder_lineage.get("warm_start")
                else "random initialisation"
            ),
        },
        "data": Blocks([dict(encoder_lineage), list(curated)]),
        "audits": Blocks(["Every gate's latest result per asset (passed of total):", list(gates)]),
        "metrics": metrics_rows(report),
        "label_efficiency": label_efficiency,
        "subgroups": subgroup_rows(report) or "No subgroup attributes were recorded.",
        "calibration": f"Expected calibration error {float(report.get('ece', math.nan)):.3f} "
        "(15 equal-width confidence bins): the mean gap between confidence and accuracy.",
        "robustness": robustness_rows(report),
        "per_class": per_class_rows(report),
        "promotion": Blocks(
            [
                decision_rows(decision, interval) if decision is not None else None,
                list(reasons),
            ]
        ),
    }
