"""`agvas segment PATH...`: masks, heat maps and overlays for files, folders and globs.

A file that cannot be read (or breaks the model) is reported and skipped; the rest go on and the exit
code is 1. Every output is written atomically, and results.jsonl is rewritten merged by path, so a
rerun into the same folder updates lines instead of duplicating them (and keeps other runs' lines).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

RESULTS_FILE = "results.jsonl"


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
    from agvas.data.io import atomic_write_bytes

    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records.values())
    atomic_write_bytes(path, text.encode("utf-8"))


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


def load_segmenter(checkpoint: str | None, device: str | None, err: Console, dtype: str | None = None):
    """The Segmenter, or exit 2 with the loader's message (which says how to get a checkpoint);
    the untrained-preset warning is shown as a console line rather than a Python warning."""
    import warnings

    from agvas.infer.segmenter import Segmenter

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            segmenter = Segmenter.from_pretrained(checkpoint, device=device, dtype=dtype)
        except (OSError, ValueError, RuntimeError) as e:
            err.print(f"[red]error:[/red] {e}")
            raise typer.Exit(2) from None
    for w in caught:
        if w.category.__name__ == "UntrainedModelWarning":
            err.print(f"[yellow]warning:[/yellow] {w.message}")
    return segmenter


def segment(
    paths: list[str] = typer.Argument(..., help="image files, folders (their images) or glob patterns"),
    mode: str = typer.Option("direct", help="direct, describe, describe-plus or explain"),
    instruction: str | None = typer.Option(None, help="replace the mode's fixed question"),
    expectation: str | None = typer.Option(None, help="normal-appearance sentence (needed by describe-plus)"),
    checkpoint: str | None = typer.Option(None, help="checkpoint folder or preset name [default: checkpoints/"
                                                      "agvas-tiny]"),
    out: Path = typer.Option(Path("segment_out"), help="output folder"),
    batch_size: int = typer.Option(8, min=1, help="images per forward pass"),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 ... [default: cuda if available]"),
    max_new_tokens: int = typer.Option(256, min=1, help="answer length limit of the generating modes"),
) -> None:
    """Segment anomalies; writes <stem>_mask.png (0/255), <stem>_heat.png, <stem>_overlay.png, results.jsonl."""
    from agvas.cli.model import _quiet_transformers
    from agvas.infer.images import ImageLoadError, expand_paths, load_image
    from agvas.infer.segmenter import check_mode

    err = Console(stderr=True)
    try:
        check_mode(mode, expectation)
    except ValueError as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    found = expand_paths(paths)
    failures = list(found.problems)
    for problem in found.problems:
        err.print(f"[yellow]skipped[/yellow] {problem}")
    if not found.paths:
        err.print("[red]error:[/red] no images to segment")
        raise typer.Exit(1)
    _quiet_transformers()
    segmenter = load_segmenter(checkpoint, device, err)

    out.mkdir(parents=True, exist_ok=True)
    results_path = out / RESULTS_FILE
    records = read_results(results_path)
    taken = {Path(r["mask"]).name.removesuffix("_mask.png"): p for p, r in records.items() if "mask" in r}
    done = 0
    progress = Progress(TextColumn("segment"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err)

    def run_batch(batch: list[tuple[Path, str, object]]) -> list:
        """Results for a batch; when the batch fails, each image alone, so one bad image costs only itself."""
        try:
            return segmenter.segment([a for _, _, a in batch], instruction=instruction, mode=mode,
                                     expectation=expectation, batch_size=len(batch), max_new_tokens=max_new_tokens)
        except Exception as e:  # any failure of one image must not stop the run
            if len(batch) > 1:
                return [r for item in batch for r in run_batch([item])]
            failures.append(f"{batch[0][0]}: {e}")
            err.print(f"[yellow]failed[/yellow] {batch[0][0]}: {e}")
            return [None]

    try:
        with progress:
            task = progress.add_task("segment", total=len(found.paths))
            for start in range(0, len(found.paths), batch_size):
                batch = []
                for path in found.paths[start:start + batch_size]:
                    try:
                        batch.append((path, str(path.resolve()), load_image(path)))
                    except ImageLoadError as e:
                        failures.append(str(e))
                        err.print(f"[yellow]skipped[/yellow] {e}")
                        progress.advance(task)
                if not batch:
                    continue
                for (path, key, image), result in zip(batch, run_batch(batch), strict=True):
                    progress.advance(task)
                    if result is None:
                        continue
                    records[key] = _save(out, path, key, image, result, taken)
                    if not result.anchors_found:
                        err.print(f"[yellow]note[/yellow] {path}: {result.note}")
                    done += 1
    finally:
        write_results(results_path, records)
    err.print(f"{done} image(s) segmented into {out}; {len(failures)} failed")
    if failures:
        raise typer.Exit(1)


def _save(out: Path, path: Path, key: str, image, result, taken: dict[str, str]) -> dict:
    from agvas.infer.render import save_result_images

    names = save_result_images(out, output_stem(path, key, taken), image, result)
    record = result.summary()
    record["path"] = key
    record.update(names)
    return record
