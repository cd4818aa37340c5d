"""The objectives' docstrings: every example runs as written, and none of the documented parts
(paper link, Args, Returns, Example) is missing, so the docs cannot drift from the code."""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch

from ssl_assets.ml.objectives import OBJECTIVES, Objective

MODULES = ["base", "simclr", "moco", "byol", "vicreg", "dino", "mae", "hybrid", "distill"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(f"ssl_assets.ml.objectives.{name}")
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    torch.manual_seed(0)
    for test in doctest.DocTestFinder().find(module, module.__name__):
        runner.run(test, out=report.append)
    failed, attempted = runner.failures, runner.tries
    assert attempted > 0, f"{module.__name__} has no docstring example"
    assert failed == 0, "".join(report)


@pytest.mark.parametrize("cls", [Objective, *OBJECTIVES.values()], ids=lambda c: c.__name__)
def test_objective_docstrings_have_paper_args_returns_example(cls: type) -> None:
    doc = cls.__doc__ or ""
    assert "https://arxiv.org/abs/" in doc
    for section in ("\n    Args:\n", "\n    Returns:\n", "\n    Example:\n        >>> "):
        assert section in doc, f"{cls.__name__} lacks {section.strip()!r}"
