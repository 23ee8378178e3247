"""The examples in docstrings (``>>>``) run and say what they show."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import aurous_async

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(aurous_async.__path__, "aurous_async.")
    if not info.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failures == 0


def test_docstring_examples_exist() -> None:
    finder = doctest.DocTestFinder()
    examples = sum(len(test.examples) for name in MODULES
                   for test in finder.find(importlib.import_module(name)))
    assert examples >= 8
