"""How results look in the Dagster UI: tables it renders inline, named pictures, rounded numbers.

Why one module: the asset page of Dagster's UI (1.13) renders table metadata
(`MetadataValue.table`) inline, but markdown and JSON only while they are under 1,000
characters; a picture embedded as markdown is always behind a "[Show Markdown]" dialog. So
every asset leads with a table of its result, names its pictures and puts them first, rounds
its numbers (a float with 17 digits reads as noise) and keeps raw lists out of the metadata.
Numeric metadata with stable keys is what the UI's Plots tab draws across materializations.

Any markdown table the project writes goes through `ssl_assets.markdown.markdown_table`, which
escapes `|` in cells, so a label can never split a column (a model card, a small inline table).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from dagster import MetadataValue, TableColumn, TableRecord, TableSchema

from ssl_assets.curation.contact_sheet import markdown_image


def plain(value: Any, digits: int = 4) -> str | int | float | bool | None:
    """A JSON-friendly scalar: numpy scalars unwrapped, floats rounded to `digits` significant
    places (NaN and infinities become None), anything else as text."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return float(f"{value:.{digits}g}")
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)


def numbers(values: Mapping[str, Any], digits: int = 4) -> dict[str, float | int]:
    """The finite numbers among `values`, rounded: numeric metadata the Plots tab can draw."""
    out: dict[str, float | int] = {}
    for key, value in values.items():
        value = plain(value, digits)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = value
    return out


def _column_type(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_integer_dtype(series):
        return "int"
    if pd.api.types.is_float_dtype(series):
        return "float"
    return "string"


def _or_na(value: Any) -> Any:
    return "n/a" if value is None else value


def table(
    df: pd.DataFrame,
    descriptions: Mapping[str, str] | None = None,
    digits: int = 4,
    limit: int | None = None,
) -> MetadataValue:
    """`df` as table metadata, rendered inline on the asset page: values rounded, at most
    `limit` rows, each column typed from its dtype and described from `descriptions`."""
    descriptions = descriptions or {}
    shown = df if limit is None else df.head(limit)
    schema = TableSchema(
        columns=[
            TableColumn(str(c), _column_type(shown[c]), description=descriptions.get(str(c)))
            for c in shown.columns
        ]
    )
    # a missing value is shown as "n/a": a None cell does not survive Dagster's event storage
    records = [
        TableRecord({str(c): _or_na(plain(v, digits)) for c, v in row.items()})
        for row in shown.to_dict("records")
    ]
    return MetadataValue.table(records, schema)


def picture(png: bytes | None, alt: str, missing: str = "nothing to show") -> MetadataValue:
    """A PNG as markdown (the UI opens it from the metadata table); `missing` when None."""
    return MetadataValue.md(markdown_image(png, alt) if png else missing)


def link(target: str) -> MetadataValue | str:
    """A URL as a clickable link in the UI; anything else (a command to open it) as text."""
    return MetadataValue.url(target) if target.startswith(("http://", "https://")) else target
