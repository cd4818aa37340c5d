"""Read a batch's optional `labels.csv` and `metadata.csv` into long, validated rows.

labels.csv:   `path` (relative to the batch) or `image_id` (of this or any earlier image), `label`
metadata.csv: `path`, any attribute columns, optional `split` pin (train | val | test)

Rows that cannot be used are returned as rejects with a reason, never silently dropped.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

import pandas as pd

from ssl_assets.data.manifest import image_id_for

SPLITS = ("train", "val", "test")
REJECT_COLUMNS = ["batch", "source", "line", "reason", "detail"]


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        rows = []
        for row in reader:
            clean = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
            rows.append((reader.line_num, clean))
    return header, rows


def _normalise_rel_path(raw: str) -> str | None:
    """Relative POSIX path inside the batch, or None when it would leave the batch."""
    if (
        raw
        and "\\" not in raw
        and "//" not in raw
        and "/." not in raw
        and not raw.startswith(("/", "."))
        and not raw.endswith("/")
    ):
        return raw  # already normal (the common case: 100,000 rows cost ~1 s the long way)
    p = PurePosixPath(raw.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or not p.parts:
        return None
    return p.as_posix().removeprefix("./")


def _reject(batch: str, source: str, line: int | None, reason: str, detail: str) -> dict:
    return {"batch": batch, "source": source, "line": line, "reason": reason, "detail": detail}


def read_labels(
    batch_dir: Path,
    batch: str,
    batch_ids: Iterable[str],
    known_earlier: Callable[[list[str]], set[str]],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Labels of this batch's `labels.csv` as (image_id, label) rows, plus rejects.

    `batch_ids` are this batch's manifest ids; `known_earlier(ids)` returns which of the given ids
    exist in earlier batches (labels returned for older images arrive this way).
    """
    path = batch_dir / "labels.csv"
    labels: list[dict] = []
    rejects: list[dict] = []
    if not path.is_file():
        return pd.DataFrame(columns=["image_id", "label"]), pd.DataFrame(columns=REJECT_COLUMNS)
    try:
        header, rows = _read_csv(path)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        rejects.append(_reject(batch, "labels.csv", None, "unreadable_csv", str(exc)))
        return pd.DataFrame(columns=["image_id", "label"]), pd.DataFrame(rejects)
    if "label" not in header or not ({"path", "image_id"} & set(header)):
        rejects.append(
            _reject(batch, "labels.csv", 1, "bad_header", f"need label and path|image_id: {header}")
        )
        return pd.DataFrame(columns=["image_id", "label"]), pd.DataFrame(rejects)

    own = set(batch_ids)
    pending: list[tuple[int, str, str]] = []
    for line, row in rows:
        label = row.get("label", "")
        if not label:
            rejects.append(_reject(batch, "labels.csv", line, "missing_label", str(row)))
            continue
        if row.get("path"):
            rel = _normalise_rel_path(row["path"])
            if rel is None:
                rejects.append(_reject(batch, "labels.csv", line, "unsafe_path", row["path"]))
                continue
            image_id = image_id_for(batch, rel)
            if image_id not in own:
                rejects.append(_reject(batch, "labels.csv", line, "unknown_path", row["path"]))
                continue
            labels.append({"image_id": image_id, "label": label})
        elif row.get("image_id"):
            if row["image_id"] in own:
                labels.append({"image_id": row["image_id"], "label": label})
            else:
                pending.append((line, row["image_id"], label))
        else:
            rejects.append(_reject(batch, "labels.csv", line, "no_image_reference", str(row)))
    if pending:
        earlier = known_earlier([image_id for _, image_id, _ in pending])
        for line, image_id, label in pending:
            if image_id in earlier:
                labels.append({"image_id": image_id, "label": label})
            else:
                rejects.append(_reject(batch, "labels.csv", line, "unknown_image_id", image_id))
    return (
        pd.DataFrame(labels, columns=["image_id", "label"]),
        pd.DataFrame(rejects, columns=REJECT_COLUMNS),
    )


def read_attributes(
    batch_dir: Path, batch: str, batch_ids: Iterable[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`metadata.csv` in long form (image_id, key, value), plus rejects."""
    path = batch_dir / "metadata.csv"
    out: list[dict] = []
    rejects: list[dict] = []
    empty = pd.DataFrame(columns=["image_id", "key", "value"])
    if not path.is_file():
        return empty, pd.DataFrame(columns=REJECT_COLUMNS)
    try:
        header, rows = _read_csv(path)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        rejects.append(_reject(batch, "metadata.csv", None, "unreadable_csv", str(exc)))
        return empty, pd.DataFrame(rejects)
    if "path" not in header:
        rejects.append(_reject(batch, "metadata.csv", 1, "bad_header", f"need path: {header}"))
        return empty, pd.DataFrame(rejects)
    own = set(batch_ids)
    keys = [h for h in header if h and h != "path"]
    for line, row in rows:
        rel = _normalise_rel_path(row.get("path", ""))
        if rel is None:
            rejects.append(_reject(batch, "metadata.csv", line, "unsafe_path", row.get("path", "")))
            continue
        image_id = image_id_for(batch, rel)
        if image_id not in own:
            rejects.append(_reject(batch, "metadata.csv", line, "unknown_path", row["path"]))
            continue
        split = row.get("split", "")
        if split and split not in SPLITS:
            rejects.append(_reject(batch, "metadata.csv", line, "bad_split", split))
            continue
        for key in keys:
            value = row.get(key, "")
            if value != "":
                out.append({"image_id": image_id, "key": key, "value": value})
    return pd.DataFrame(out, columns=["image_id", "key", "value"]), pd.DataFrame(
        rejects, columns=REJECT_COLUMNS
    )
