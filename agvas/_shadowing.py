"""Detect a folder named `agvas` in the working directory shadowing the installed package.

Run from a folder that holds a checkout of this project called `agvas/`, Python imports that checkout's
root (which has no `__init__.py`) as a namespace package named `agvas`; an editable install still
supplies the subpackages, so imports half-work and fail later in odd places (`agvas.__file__` is None).
Saying what happened, once, at import, turns that puzzle into a one-line fix.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path


class ShadowedPackageWarning(UserWarning):
    """`import agvas` found a folder (a namespace package), not this package."""


def warn_if_shadowed() -> None:
    top = sys.modules.get("agvas")
    if top is None or getattr(top, "__file__", None) is not None:
        return
    real = Path(__file__).resolve().parent
    folders = ", ".join(str(Path(p)) for p in getattr(top, "__path__", []))
    warnings.warn(
        f"'import agvas' found the folder {folders} (imported as a namespace package, probably a checkout of "
        f"this project in the current directory) instead of the package at {real}; run from another folder "
        "or from inside the checkout, or rename that folder. Continuing with the installed subpackages.",
        ShadowedPackageWarning, stacklevel=3)


warn_if_shadowed()  # once, when the first subpackage that imports this module loads
