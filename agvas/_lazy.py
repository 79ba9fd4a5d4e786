"""Package names loaded on first use (PEP 562), shared by `agvas.model` and `agvas.infer`: their help text
and light helpers must not pay for importing torch and transformers."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_names(package: str, where: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` that imports each name of `where` from its module once, then keeps it."""
    def __getattr__(name: str) -> Any:
        if name in where:
            value = getattr(importlib.import_module(where[name]), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return __getattr__
