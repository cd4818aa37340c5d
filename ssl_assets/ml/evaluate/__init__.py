"""Evaluation of self-supervised encoders: embeddings, probes, fine-tuning, promotion.

Why a package of plain functions: like the rest of `ssl_assets.ml`, nothing here imports
Dagster, so every step runs in a unit test, a notebook or a Dagster asset alike; the assets
only load inputs, call these functions and record their outputs.

Modules:

- `features`: the one preprocessing path (canonical uint8 -> encoder input) and
  `embed_images` (frozen features, batched, eval mode, no gradients).
- `budgets`: per-class label budgets `max(ceil(fraction * n_c), k)`, nested, seeded.
- `probes`: logistic-regression and weighted-kNN probes, hyper-parameters chosen on val.
- `supervised`: `Classifier` (encoder + linear head) and the supervised training loop shared by
  fine-tuning and the from-scratch baseline (time budget, early stopping).
- `efficiency`: the label-efficiency table (SSL vs random encoder vs from-scratch), its
  summary and curve.
- `lora`: LoRA wrappers for linear and conv layers; `finetuning`: `full` / `partial` / `lora`.
- `metrics`: accuracy, per-class and subgroup accuracy, ECE, corruption robustness.
- `promotion`: paired bootstrap and the champion/challenger decision.
- `shadow`: models scored on a batch's new labels (Wilson intervals) and the decay rule.
- `model_io`: the fine-tuned model directory (`model.safetensors` + `model.json`);
  `model_card`: `MODEL_CARD.md`.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> submodule; imported on first use, so `import ssl_assets.inference` (which
#: needs three submodules) does not pay for pandas, scikit-learn or matplotlib
_EXPORTS: dict[str, str] = {
    "Classifier": "supervised",
    "DEFAULT_CORRUPTIONS": "metrics",
    "FinetuneConfig": "finetuning",
    "FinetuneResult": "finetuning",
    "LabelBudget": "budgets",
    "PromotionDecision": "promotion",
    "PromotionPolicy": "promotion",
    "ScratchConfig": "efficiency",
    "SupervisedConfig": "supervised",
    "TrainLog": "supervised",
    "apply_lora": "lora",
    "backbone_stages": "finetuning",
    "classification_report": "metrics",
    "compare_models": "promotion",
    "corrupt": "metrics",
    "decide_promotion": "promotion",
    "embed_images": "features",
    "encode_labels": "features",
    "evaluate_classifier": "metrics",
    "expected_calibration_error": "metrics",
    "finetune": "finetuning",
    "fit_knn_probe": "probes",
    "fit_linear_probe": "probes",
    "fit_probe": "probes",
    "label_efficiency": "efficiency",
    "load_finetuned": "model_io",
    "lora_base_state_dict": "lora",
    "merge_lora": "lora",
    "paired_bootstrap": "promotion",
    "parse_budgets": "budgets",
    "plot_label_efficiency": "efficiency",
    "predict_labels": "supervised",
    "predict_proba": "supervised",
    "preprocess": "features",
    "sample_label_budget": "budgets",
    "save_finetuned": "model_io",
    "ssl_wall_time": "efficiency",
    "subgroup_accuracy": "metrics",
    "summarise": "efficiency",
    "train_classifier": "supervised",
    "train_scratch_baseline": "efficiency",
    "write_model_card": "model_card",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
