"""GX 1.x expectation suites, one function per stage.

Suites are built from thresholds at call time (thresholds are run config), and GX is imported
lazily: importing it costs ~5 s, which `dagster dev` and sensors should not pay at load time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from quality.gates import gx_modules


def raw_images_suite(
    max_quarantine_fraction: float, columns: Sequence[str], reasons: Sequence[str]
) -> list[Any]:
    """The raw manifest: complete rows, unique ids, sane sizes, a bounded quarantine rate.
    `columns`: the manifest's columns; `reasons`: every known quarantine reason (both owned by
    `ssl_assets.data.manifest`)."""
    gxe = gx_modules()[1]
    from great_expectations.expectations.row_conditions import Column

    ok = {"row_condition": Column("status") == "ok"}
    quarantined = {"row_condition": Column("status") == "quarantined"}
    expectations = [
        gxe.ExpectTableColumnsToMatchSet(column_set=list(columns), exact_match=False),
        *[
            gxe.ExpectColumnValuesToNotBeNull(column=c)
            for c in ("image_id", "batch", "rel_path", "status")
        ],
        gxe.ExpectColumnValuesToBeUnique(column="image_id"),
        gxe.ExpectColumnValuesToBeInSet(column="status", value_set=["ok", "quarantined"]),
        gxe.ExpectColumnValuesToNotBeNull(column="content_hash", **ok),
        gxe.ExpectColumnValuesToNotBeNull(column="format", **ok),
        gxe.ExpectColumnValuesToBeBetween(column="width", min_value=1, **ok),
        gxe.ExpectColumnValuesToBeBetween(column="height", min_value=1, **ok),
        gxe.ExpectColumnValuesToBeBetween(column="bytes", min_value=1, **ok),
        gxe.ExpectColumnValuesToBeInSet(column="reason", value_set=list(reasons), **quarantined),
        # The quarantine rate: at least (1 - max fraction) of the files must be ok.
        gxe.ExpectColumnValuesToBeInSet(
            column="status",
            value_set=["ok"],
            mostly=max(0.0, 1.0 - max_quarantine_fraction),
            meta={"gate": "quarantine_rate", "max_quarantine_fraction": max_quarantine_fraction},
        ),
    ]
    return expectations


def curated_images_suite(allowed_reasons: list[str]) -> list[Any]:
    """curated_images: one row per image, known splits, reasons from the known set only."""
    gxe = gx_modules()[1]

    reason = "(?:" + "|".join(sorted(allowed_reasons)) + ")"
    expectations = [
        *[
            gxe.ExpectColumnValuesToNotBeNull(column=c)
            for c in ("image_id", "batch", "group_id", "split", "include")
        ],
        gxe.ExpectColumnValuesToBeUnique(column="image_id"),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "val", "test"]),
        gxe.ExpectColumnValuesToMatchRegex(
            column="reasons", regex=f"^(?:{reason}(?:,{reason})*)?$"
        ),
    ]
    return expectations


def labeling_candidates_suite(budget: int) -> list[Any]:
    """labeling_candidates CSV, the contract a labeling tool relies on: exactly image_id, path,
    thumbnail; one row per image, no empty cell, at most `budget` rows."""
    gxe = gx_modules()[1]

    return [
        gxe.ExpectTableColumnsToMatchOrderedList(column_list=["image_id", "path", "thumbnail"]),
        *[gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("image_id", "path", "thumbnail")],
        gxe.ExpectColumnValuesToBeUnique(column="image_id"),
        gxe.ExpectTableRowCountToBeBetween(min_value=0, max_value=max(0, int(budget))),
    ]


def probes_suite(methods: list[str]) -> list[Any]:
    """The label-efficiency table: accuracies are probabilities, every method has rows."""
    gxe = gx_modules()[1]

    return [
        *[
            gxe.ExpectColumnValuesToNotBeNull(column=c)
            for c in ("model_id", "budget", "method", "seed", "accuracy", "n_labels")
        ],
        gxe.ExpectColumnValuesToBeBetween(column="accuracy", min_value=0.0, max_value=1.0),
        gxe.ExpectColumnValuesToBeBetween(column="val_accuracy", min_value=0.0, max_value=1.0),
        gxe.ExpectColumnValuesToBeBetween(column="n_labels", min_value=1),
        gxe.ExpectColumnDistinctValuesToContainSet(column="method", value_set=methods),
    ]


def model_metrics_suite() -> list[Any]:
    """A fine-tuned model's metrics (long form: metric, value): every accuracy, ECE and
    robustness figure is a finite probability, and the headline ones are present."""
    gxe = gx_modules()[1]

    return [
        gxe.ExpectColumnValuesToNotBeNull(column="metric"),
        gxe.ExpectColumnValuesToNotBeNull(column="value"),
        gxe.ExpectColumnValuesToBeUnique(column="metric"),
        gxe.ExpectColumnValuesToBeBetween(column="value", min_value=0.0, max_value=1.0),
        gxe.ExpectColumnDistinctValuesToContainSet(column="metric", value_set=["accuracy", "ece"]),
    ]
