"""Batch isolation: a batch that fails is retried image by image, so one bad image costs only itself.

The command line (`agvas segment`), the evaluation runner and the server's worker all batch images for
speed and all promise that a single unusable image never takes its neighbours down with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def run_isolated(run: Callable[[Sequence[T]], Sequence[R]], items: Sequence[T]) -> list[R | Exception]:
    """`run(items)` as a list; if it raises, each item is run alone (with `run([item])`) and an item that
    fails alone gets its exception in its place, so the caller sees one entry per item either way.

    Any Exception is caught (not BaseException: an interrupt still stops the caller). `run` is trusted
    to return one result per item; a caller that cannot trust it checks inside `run`.
    """
    try:
        return list(run(items))
    except Exception as err:
        if len(items) <= 1:
            return [err] * len(items)
        return [r for item in items for r in run_isolated(run, [item])]
