"""Read a batch's optional `labels.csv` and `metadata.csv` into long, validated rows.

labels.csv:   `path` (relative to the batch) or `image_id` (of this or any earlier image), `label`
metadata.csv: `path`, any attribute columns, optional `split` pin (train | val | test)

Rows that cannot be used are returned as rejects with a reason, never silently dropped; a file
that cannot be used at all (not a regular file, too large, not UTF-8 CSV, a bad, duplicated or
too wide header) is one reject for the whole file. Sidecars are untrusted input like the
images: they are read through `ssl_assets.data.landed` (regular files only, never through a
link, size-capped) and held to the limits below.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath

import pandas as pd

from ssl_assets.data.landed import LandedFileError, read_landed
from ssl_assets.data.manifest import image_id_for

SPLITS = ("train", "val", "test")
REJECT_COLUMNS = ["batch", "source", "line", "reason", "detail"]

# Limits on a sidecar CSV, all in one place. Why each:
# - bytes: the file is read into memory whole; 128 MiB holds a ~100-byte row for each of more
#   than a million images, far more than one batch needs.
MAX_SIDECAR_BYTES = 128 << 20
# - columns (path, split and labels included): every metadata.csv attribute becomes a
#   subgroup analysis in bias_audit (shares, drift, a shortcut probe), so its cost grows with
#   the column count (10,000 columns took bias_audit from 4 s to 235 s). Real image metadata
#   has a handful to a few dozen attributes.
MAX_SIDECAR_COLUMNS = 64
# - characters per cell: a relative path is at most PATH_MAX (4096 on Linux) and a label or an
#   attribute value is a short category; longer cells are junk, not data.
MAX_CELL_CHARS = 4096
# - rejects recorded per file: one row each for the first ones, then a single summary row, so a
#   file of garbage cannot flood `ingest_rejects` (and memory) with millions of rows.
MAX_REJECTS_PER_FILE = 1000
# - characters of a reject's detail (the offending row, shortened).
MAX_DETAIL_CHARS = 300

SIDECAR_REJECT_REASONS = (
    # the whole file
    "not_a_regular_file",
    "file_too_large",
    "unreadable_csv",
    "bad_header",
    "duplicate_header",
    "too_many_columns",
    # one row
    "extra_cells",
    "cell_too_long",
    "unsafe_path",
    "unknown_path",
    "bad_split",
    "missing_label",
    "no_image_reference",
    "unknown_image_id",
    "too_many_rejects",
)


class SidecarError(Exception):
    """A sidecar that cannot be used at all; `reason` is one of SIDECAR_REJECT_REASONS."""

    def __init__(self, reason: str, detail: str, line: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.line = reason, detail, line


def _read_csv(path: Path) -> tuple[list[str], Iterator[tuple[int, dict[str, str] | SidecarError]]]:
    """The header and, lazily, (line, row) pairs: a dict of stripped cells by column name, or a
    `SidecarError` for a row that breaks a limit. Raises `SidecarError` for the whole file."""
    try:
        text = read_landed(path, MAX_SIDECAR_BYTES).decode("utf-8-sig")
    except LandedFileError as exc:
        raise SidecarError(exc.reason, exc.detail) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SidecarError("unreadable_csv", str(exc)) from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader, [])]
    except csv.Error as exc:
        raise SidecarError("unreadable_csv", str(exc)) from exc
    if len(header) > MAX_SIDECAR_COLUMNS:
        raise SidecarError(
            "too_many_columns",
            f"{len(header)} columns; at most {MAX_SIDECAR_COLUMNS} are read: {header[:5]} ...",
            line=1,
        )
    if any(len(h) > MAX_CELL_CHARS for h in header):
        raise SidecarError(
            "bad_header", f"a column name is longer than {MAX_CELL_CHARS} characters", line=1
        )
    dupes = sorted(name for name, n in Counter(h for h in header if h).items() if n > 1)
    if dupes:
        raise SidecarError(
            "duplicate_header", f"columns named more than once (which to use?): {dupes}", line=1
        )

    def rows() -> Iterator[tuple[int, dict[str, str] | SidecarError]]:
        try:
            for cells in reader:
                if not cells:
                    continue  # a blank line
                line = reader.line_num
                if len(cells) > len(header):
                    yield (
                        line,
                        SidecarError(
                            "extra_cells",
                            f"{len(cells)} cells under {len(header)} columns: {cells}",
                        ),
                    )
                elif any(len(c) > MAX_CELL_CHARS for c in cells):
                    yield (
                        line,
                        SidecarError(
                            "cell_too_long", f"a cell is longer than {MAX_CELL_CHARS} characters"
                        ),
                    )
                else:
                    yield (
                        line,
                        {
                            h: (cells[i].strip() if i < len(cells) else "")
                            for i, h in enumerate(header)
                        },
                    )
        except csv.Error as exc:  # e.g. a cell beyond the csv module's own field limit
            yield reader.line_num, SidecarError("unreadable_csv", f"stopped reading: {exc}")

    return header, rows()


class _Rejects:
    """One file's rejects: the first MAX_REJECTS_PER_FILE each get a row, the rest one summary."""

    def __init__(self, batch: str, source: str, rows: list[dict]) -> None:
        self.batch, self.source, self.rows = batch, source, rows
        self.recorded = self.dropped = 0

    def add(self, line: int | None, reason: str, detail: str) -> None:
        if self.recorded >= MAX_REJECTS_PER_FILE:
            self.dropped += 1
            return
        self.recorded += 1
        self.rows.append(_reject(self.batch, self.source, line, reason, detail))

    def close(self) -> None:
        if self.dropped:
            self.rows.append(
                _reject(
                    self.batch,
                    self.source,
                    None,
                    "too_many_rejects",
                    f"{self.dropped} more rows rejected after the first {MAX_REJECTS_PER_FILE}",
                )
            )


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
    assert reason in SIDECAR_REJECT_REASONS, reason
    if len(detail) > MAX_DETAIL_CHARS:
        detail = detail[: MAX_DETAIL_CHARS - 3] + "..."
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
    no_labels = pd.DataFrame(columns=["image_id", "label"])
    labels: list[dict] = []
    rows_out: list[dict] = []
    rejects = _Rejects(batch, "labels.csv", rows_out)
    if not os.path.lexists(path):  # a link or a FIFO of that name is rejected, not skipped
        return no_labels, pd.DataFrame(columns=REJECT_COLUMNS)
    try:
        header, rows = _read_csv(path)
    except SidecarError as exc:
        rejects.add(exc.line, exc.reason, exc.detail)
        return no_labels, pd.DataFrame(rows_out, columns=REJECT_COLUMNS)
    if "label" not in header or not ({"path", "image_id"} & set(header)):
        rejects.add(1, "bad_header", f"need label and path|image_id: {header}")
        return no_labels, pd.DataFrame(rows_out, columns=REJECT_COLUMNS)

    own = set(batch_ids)
    pending: list[tuple[int, str, str]] = []
    for line, row in rows:
        if isinstance(row, SidecarError):
            rejects.add(line, row.reason, row.detail)
            continue
        label = row.get("label", "")
        if not label:
            rejects.add(line, "missing_label", str(row))
            continue
        if row.get("path"):
            rel = _normalise_rel_path(row["path"])
            if rel is None:
                rejects.add(line, "unsafe_path", row["path"])
                continue
            image_id = image_id_for(batch, rel)
            if image_id not in own:
                rejects.add(line, "unknown_path", row["path"])
                continue
            labels.append({"image_id": image_id, "label": label})
        elif row.get("image_id"):
            if row["image_id"] in own:
                labels.append({"image_id": row["image_id"], "label": label})
            else:
                pending.append((line, row["image_id"], label))
        else:
            rejects.add(line, "no_image_reference", str(row))
    if pending:
        earlier = known_earlier([image_id for _, image_id, _ in pending])
        for line, image_id, label in pending:
            if image_id in earlier:
                labels.append({"image_id": image_id, "label": label})
            else:
                rejects.add(line, "unknown_image_id", image_id)
    rejects.close()
    return (
        pd.DataFrame(labels, columns=["image_id", "label"]),
        pd.DataFrame(rows_out, columns=REJECT_COLUMNS),
    )


def read_attributes(
    batch_dir: Path, batch: str, batch_ids: Iterable[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`metadata.csv` in long form (image_id, key, value), plus rejects."""
    path = batch_dir / "metadata.csv"
    out: list[dict] = []
    rows_out: list[dict] = []
    rejects = _Rejects(batch, "metadata.csv", rows_out)
    empty = pd.DataFrame(columns=["image_id", "key", "value"])
    if not os.path.lexists(path):  # a link or a FIFO of that name is rejected, not skipped
        return empty, pd.DataFrame(columns=REJECT_COLUMNS)
    try:
        header, rows = _read_csv(path)
    except SidecarError as exc:
        rejects.add(exc.line, exc.reason, exc.detail)
        return empty, pd.DataFrame(rows_out, columns=REJECT_COLUMNS)
    if "path" not in header:
        rejects.add(1, "bad_header", f"need path: {header}")
        return empty, pd.DataFrame(rows_out, columns=REJECT_COLUMNS)
    own = set(batch_ids)
    keys = [h for h in header if h and h != "path"]
    for line, row in rows:
        if isinstance(row, SidecarError):
            rejects.add(line, row.reason, row.detail)
            continue
        rel = _normalise_rel_path(row.get("path", ""))
        if rel is None:
            rejects.add(line, "unsafe_path", row.get("path", ""))
            continue
        image_id = image_id_for(batch, rel)
        if image_id not in own:
            rejects.add(line, "unknown_path", row["path"])
            continue
        split = row.get("split", "")
        if split and split not in SPLITS:
            rejects.add(line, "bad_split", split)
            continue
        for key in keys:
            value = row.get(key, "")
            if value != "":
                out.append({"image_id": image_id, "key": key, "value": value})
    rejects.close()
    return pd.DataFrame(out, columns=["image_id", "key", "value"]), pd.DataFrame(
        rows_out, columns=REJECT_COLUMNS
    )
