"""Markdown tables that stay tables: every row has its header's cells, whatever the values.

Why: a value holding `|` (a label like `5%|k>=2`, a message) splits a GitHub-flavoured markdown
row into extra cells, and a line break ends the table. `markdown_table` escapes the one and
folds the other; `markdown_tables` reads tables back (tests check every table the project
writes with it). Plain code, no Dagster import: the model card uses it too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd


def _cell(value: Any, floatfmt: str) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not isinstance(value, bool):
        text = "n/a" if not math.isfinite(value) else format(value, floatfmt)
    elif value is None:
        text = ""
    else:
        text = str(value)
    return " ".join(text.split()).replace("|", "\\|")


def markdown_table(
    rows: pd.DataFrame | Sequence[Mapping[str, Any]],
    floatfmt: str = ".4g",
    limit: int | None = None,
) -> str:
    """A GitHub-flavoured markdown table: every row has exactly the header's cells (a `|` in a
    value is escaped, line breaks are folded), floats formatted with `floatfmt`."""
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if limit is not None:
        df = df.head(limit)
    header = [_cell(str(c), floatfmt) for c in df.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v, floatfmt) for v in row) + " |")
    return "\n".join(lines)


def split_markdown_row(line: str) -> list[str]:
    """The cells of one markdown table row (`\\|` is a literal bar, not a separator)."""
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    cells, current, escaped = [], [], False
    for ch in body:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            current.append(ch)
            escaped = True
        elif ch == "|":
            cells.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    cells.append("".join(current).strip())
    return cells


def markdown_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every table in a markdown text, as (header cells, rows of cells): a header line, a
    delimiter line of dashes, then the rows up to the first line that is not a table row."""
    lines = text.splitlines()
    found = []
    i = 0
    while i + 1 < len(lines):
        head, delim = lines[i].strip(), lines[i + 1].strip()
        is_delim = delim.startswith("|") and set(
            delim.replace("|", "").replace(":", "").replace(" ", "")
        ) == {"-"}
        if head.startswith("|") and is_delim:
            rows = []
            j = i + 2
            while j < len(lines) and lines[j].strip().startswith("|"):
                rows.append(split_markdown_row(lines[j]))
                j += 1
            found.append((split_markdown_row(head), rows))
            i = j
        else:
            i += 1
    return found
