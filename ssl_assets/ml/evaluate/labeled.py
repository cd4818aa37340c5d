"""The labeled images evaluation reads: included, labeled images per split, with their groups.

No torch import: the Dagster layer builds this from the store's rows and the lake's arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


@dataclass
class LabeledSplits:
    """Included, labeled images per split (canonical uint8 pixels), with their groups."""

    ids: dict[str, list[str]]
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]  # int codes into class_names
    class_names: list[str]
    groups: dict[str, dict[str, np.ndarray]]  # split -> attribute -> values

    @classmethod
    def from_rows(
        cls,
        rows: pd.DataFrame,
        attributes: pd.DataFrame,
        read_rows: Callable[[pd.DataFrame], np.ndarray],
    ) -> LabeledSplits:
        """`rows`: image_id, split, array_path, array_row, label (`labeled_rows`);
        `attributes`: image_id, key, value; `read_rows` reads catalog pixels. Raises ValueError
        unless every split has labeled images of at least two classes."""
        class_names = sorted(rows["label"].unique().tolist())
        missing = [s for s in SPLITS if (rows["split"] == s).sum() == 0]
        if missing or len(class_names) < 2:
            raise ValueError(
                "evaluation needs labeled images of at least two classes in every split; "
                f"no labeled images in {missing}"
                if missing
                else "fewer than two classes labeled"
            )
        code = {c: i for i, c in enumerate(class_names)}
        wide = (
            attributes.pivot(index="image_id", columns="key", values="value")
            if len(attributes)
            else None
        )
        out = cls({}, {}, {}, class_names, {})
        for split in SPLITS:
            part = rows[rows["split"] == split].reset_index(drop=True)
            out.ids[split] = part["image_id"].tolist()
            out.images[split] = read_rows(part)
            out.labels[split] = part["label"].map(code).to_numpy(np.int64)
            out.groups[split] = (
                {
                    key: wide.reindex(part["image_id"])[key].to_numpy(dtype=object)
                    for key in wide.columns
                }
                if wide is not None
                else {}
            )
        return out
