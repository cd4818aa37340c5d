"""Named SQL statements, kept in `.sql` files beside the domain module that runs them.

Each domain of the store (`ingest`, `curation`, `audits`, `registry`, `evaluation`, `gates`) keeps
its statements in `<domain>.sql`, one per block headed `-- name: <statement>`, as aiosql and
yesql do. A statement is plain SQL with `?` placeholders: values are always bound parameters,
never formatted into the text, and table names come only from the versioned schema.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

_HERE = Path(__file__).parent
_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


@cache
def statements(domain: str) -> dict[str, str]:
    """Every named statement of `<domain>.sql`, in file order."""
    text = (_HERE / f"{domain}.sql").read_text()
    parts = _NAME.split(text)
    found: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        sql = "\n".join(
            line for line in body.strip().splitlines() if not line.lstrip().startswith("--")
        ).strip()
        if name in found:
            raise ValueError(f"{domain}.sql names {name!r} twice")
        found[name] = sql.rstrip(";")
    return found


def sql(domain: str, name: str) -> str:
    """The statement `name` of `<domain>.sql` (KeyError with the known names otherwise)."""
    known = statements(domain)
    if name not in known:
        raise KeyError(f"{domain}.sql has no statement {name!r}; it has {sorted(known)}")
    return known[name]
