"""`results.jsonl` of `agvas segment`: one JSON record per image, keyed by the image's resolved path.

Each record is appended (one write, flushed) as soon as the image's pictures are on disk, so a run that
is killed part-way keeps every record it finished; the pictures are written first, so a record never
points at a missing file. Readers merge by path, the last line winning, and the file is rewritten whole
(atomically) at the start and end of a run, so reruns update lines instead of duplicating them and a
line cut short by a kill is dropped rather than glued to the next append.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import IO

from agvas.io import atomic_write_bytes

RESULTS_FILE = "results.jsonl"
PICTURES = ("mask", "heat", "overlay")


def read_results(path: Path) -> dict[str, dict]:
    """Existing records by path (unparseable lines are dropped: the file is rewritten whole)."""
    records: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "path" in rec:
                records[rec["path"]] = rec
    return records


def write_results(path: Path, records: dict[str, dict]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records.values())
    atomic_write_bytes(path, text.encode("utf-8"))


def is_done(out: Path, record: dict | None, settings: dict[str, object]) -> bool:
    """Whether a record made with these settings (mode, threshold, min_area) exists and all its pictures
    are on disk, so that a rerun may skip the image; a rerun with other settings redoes it."""
    return (record is not None and all(record.get(k) == v for k, v in settings.items())
            and all(isinstance(record.get(k), str) and (out / record[k]).is_file() for k in PICTURES))


class ResultsLog:
    """The records of one output folder: merged on open, appended per image, rewritten on close."""

    def __init__(self, out: Path) -> None:
        self.path = out / RESULTS_FILE
        self.records = read_results(self.path)
        write_results(self.path, self.records)  # drop a half line a killed run may have left
        self._fh: IO[str] = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def add(self, record: dict) -> None:
        self.records[record["path"]] = record
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()  # in the kernel now: survives SIGKILL of this process

    def close(self) -> None:
        self._fh.close()
        write_results(self.path, self.records)


def output_stem(path: Path, key: str, taken: dict[str, str]) -> str:
    """The file's stem, or stem-<hash of its path> when another input already owns that stem.

    `taken` maps stems to the path that owns them (from earlier runs and this one), so the same input
    always gets the same names and two inputs never overwrite each other's pictures.
    """
    stem = path.stem
    owner = taken.get(stem)
    if owner is not None and owner != key:
        stem = f"{path.stem}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
    taken[stem] = key
    return stem
