"""Anomaly-Instruct: the JSONL that `agvas data annotate` writes ({"img_path", "record": {five fields}}
per line) beside the dataset root it annotated (its meta.json).

`agvas.data.instruct.read_records` stops at the first bad line, which is right when resuming an
annotation; a training run instead names each bad line (file:line and why), counts it, and goes on
with the others. Records for images missing from meta.json are listed too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from agvas.data.instruct import InstructRecord, read_records
from agvas.data.meta import load_meta
from agvas.data.sources.base import EntryPool, Problems
from agvas.io import DataError


def read_records_tolerant(path: str | os.PathLike) -> tuple[dict[str, InstructRecord], Problems]:
    """img_path -> record, and every line that is not a valid record (counted, never fatal)."""
    path = Path(path)
    problems = Problems()
    try:
        out = read_records(path, on_bad=lambda i, message: problems.add(f"{path}:{i}", message))
    except OSError as err:
        raise DataError(f"{path}: cannot read the records ({err})") from None
    return out, problems


class AnomalyInstructReader(EntryPool):
    """The annotated images (anomalous ones with a record, and the root's good images) as a pool."""

    kind = "anomaly-instruct"

    def __init__(self, records: str | os.PathLike, root: str | os.PathLike,
                 splits: Sequence[str] = ("train", "test"), name: str | None = None,
                 augment: Callable[[np.ndarray, np.ndarray, np.random.Generator],
                                   tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        self.records, problems = read_records_tolerant(records)
        entries = [e for sp in splits for es in load_meta(root, sp).values() for e in es]
        known = {e.img_path for e in entries}
        for img_path in sorted(set(self.records) - known):
            problems.add(f"{records}: {img_path}", f"{records}: record for {img_path}, which {root}/meta.json lacks")
        kept = [e for e in entries if not e.anomalous or e.img_path in self.records]
        super().__init__(root, kept, name or self.kind, augment)
        self.problems = problems
        if not self.anomalous:
            raise DataError(f"{records}: no valid record matches an anomalous image of {root}/meta.json"
                            + (f" ({len(problems)} bad lines)" if problems else ""))
