"""`results.jsonl` of `agvas segment`: one JSON record per image, keyed by the image's resolved path.

Each record is appended (one write, flushed) as soon as the image's pictures are on disk, so a run that
is killed part-way keeps every record it finished; the pictures are written first, so a record never
points at a missing file. Readers merge by path, the last line winning, and the file is rewritten whole
(atomically) at the start and end of a run, so reruns update lines instead of duplicating them and a
line cut short by a kill is dropped rather than glued to the next append.

A sharded run (`accelerate launch ... -m agvas.cli segment`) has each process append to its own
`results.rank-R-of-W.jsonl`; the first process merges them into results.jsonl once all are done, in the
order a single process would have written. Shard files a killed run left behind count as done work for
the next run (sharded or not), which merges them too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import IO

from agvas.io import atomic_write_bytes

RESULTS_FILE = "results.jsonl"
SHARD_PATTERN = "results.rank-*.jsonl"
PICTURES = ("mask", "heat", "overlay")


def shard_file(rank: int, world: int) -> str:
    return f"results.rank-{rank:03d}-of-{world:03d}.jsonl"


def read_all_results(out: Path) -> dict[str, dict]:
    """results.jsonl, then any shard files (a sharded run's, or a killed one's), merged by path."""
    records = read_results(out / RESULTS_FILE)
    for shard in sorted(out.glob(SHARD_PATTERN)):
        records.update(read_results(shard))
    return records


def merge_results(out: Path, order: list[str]) -> None:
    """Fold every shard file into results.jsonl and remove them. Records keep their place in
    results.jsonl; new ones follow in `order` (the run's input order), as one process appends them."""
    records = read_results(out / RESULTS_FILE)
    shards = sorted(out.glob(SHARD_PATTERN))
    new: dict[str, dict] = {}
    for shard in shards:
        new.update(read_results(shard))
    rank = {key: i for i, key in enumerate(order)}
    for key in sorted(new, key=lambda k: rank.get(k, len(rank))):
        records[key] = new[key]
    write_results(out / RESULTS_FILE, records)
    for shard in shards:
        shard.unlink(missing_ok=True)


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
    """The records of one output folder: merged on open, appended per image, rewritten on close.

    `shard`: this process's own file in a sharded run (None: results.jsonl itself). `records` holds
    everything already done in the folder, the other shards' included, so no process redoes it.
    """

    def __init__(self, out: Path, shard: str | None = None) -> None:
        self.path = out / (shard or RESULTS_FILE)
        self.records = read_all_results(out)
        self._mine = self.records if shard is None else read_results(self.path)
        write_results(self.path, self._mine)  # drop a half line a killed run may have left
        if shard is None:  # results.jsonl now holds what a killed sharded run left in its shard files
            for stale in out.glob(SHARD_PATTERN):
                stale.unlink(missing_ok=True)
        self._fh: IO[str] = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def add(self, record: dict) -> None:
        self.records[record["path"]] = record
        self._mine[record["path"]] = record
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()  # in the kernel now: survives SIGKILL of this process

    def close(self) -> None:
        self._fh.close()
        write_results(self.path, self._mine)


def plan_stems(keys: list[tuple[Path, str]], records: dict[str, dict]) -> dict[str, str]:
    """Each input's picture stem, decided for the whole input list up front (so every process of a
    sharded run names each image the same way, and a name never depends on which images failed)."""
    taken = {Path(r["mask"]).name.removesuffix("_mask.png"): p for p, r in records.items() if "mask" in r}
    return {key: output_stem(path, key, taken) for path, key in keys}


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
