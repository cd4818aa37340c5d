"""Plain code refuses bad data with a ValueError; a step shows it as a Dagster Failure.

Why: `curation/`, `audit/` and `ml/` know no Dagster, so when a data rule stops them (two
pinned-embedder versions, no labeled val images, ...) they raise ValueError with a sentence a
person can act on. Wrapped in `refused()`, an asset turns that into a `Failure` with the same
words, so the UI and the run log lead with the reason instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dagster import Failure


@contextmanager
def refused() -> Iterator[None]:
    """Re-raise a ValueError from the block as a Failure carrying its message."""
    try:
        yield
    except ValueError as exc:
        raise Failure(description=str(exc)) from exc
