"""Dataset converters: the publisher's layout in, a `meta.json` (and clean masks) out.

One module per dataset finds the pairs (`Converter.scan`); `pipeline.convert` validates, places and
describes them the same way for all. Use `convert(name, src, dst)` or `agvas data prepare NAME SRC DST`.
"""

from __future__ import annotations

import os
from typing import Any

from agvas.data.converters.base import Converter, LayoutError, NothingValidError, Pair, Skip
from agvas.data.converters.crackforest import CrackForestConverter
from agvas.data.converters.cvc import ClinicDBConverter, ColonDBConverter
from agvas.data.converters.folder import FolderConverter
from agvas.data.converters.isic import ISICConverter
from agvas.data.converters.ksdd2 import KSDD2Converter
from agvas.data.converters.kvasir import KvasirConverter
from agvas.data.converters.mtd import MTDConverter
from agvas.data.converters.mvtec import MVTecConverter
from agvas.data.converters.pipeline import ConversionReport, LinkMode, Result
from agvas.data.converters.pipeline import convert as run_converter
from agvas.data.converters.rsdd import RSDDConverter
from agvas.data.converters.visa import VisAConverter

CONVERTERS: dict[str, type[Converter]] = {
    c.name: c
    for c in (
        MVTecConverter, VisAConverter, KSDD2Converter, RSDDConverter, ISICConverter, ColonDBConverter,
        ClinicDBConverter, MTDConverter, CrackForestConverter, KvasirConverter, FolderConverter,
    )
}


def get_converter(name: str, **options: Any) -> Converter:
    """Instantiate a converter by name; options (only `folder` takes any) go to its constructor."""
    try:
        cls = CONVERTERS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(CONVERTERS)}") from None
    return cls(**options)


def convert(
    name: str,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    link: LinkMode = "symlink",
    verify_images: bool = False,
    workers: int | None = None,
    **options: Any,
) -> ConversionReport:
    """Convert dataset `name` from SRC to DST/meta.json and return what was done and skipped."""
    return run_converter(get_converter(name, **options), src, dst, link=link, verify_images=verify_images,
                         workers=workers)


__all__ = [
    "CONVERTERS", "ConversionReport", "Converter", "LayoutError", "LinkMode", "NothingValidError", "Pair",
    "Result", "Skip", "convert", "get_converter", "run_converter",
]
