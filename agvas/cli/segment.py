"""`agvas segment PATH...`: masks, heat maps and overlays for files, folders and globs.

A file that cannot be read, is over --max-pixels (judged from its header) or breaks the model is
reported and skipped; the rest go on and the exit code is 1. Every picture is written atomically and
each image's line is appended to results.jsonl as soon as its pictures are on disk (`results_file`),
so a killed run keeps what it finished and a rerun skips it (unless --overwrite). The output folder is
locked for the run: a second run into it refuses (`agvas.data.folder_lock`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agvas.cli.common import CHECKPOINT_HELP, CPU_INT8_HELP, check_mode_flags, prepare_out
from agvas.cli.results_file import RESULTS_FILE, ResultsLog, is_done, merge_results, plan_stems, shard_file
from agvas.io import DEFAULT_MAX_PIXELS
from agvas.modes import EXPECTATION_MODE, MODES_TEXT

if TYPE_CHECKING:
    from agvas.infer.distributed import Distributed

__all__ = ["RESULTS_FILE", "load_segmenter", "segment", "segmented"]

T = TypeVar("T")


def load_segmenter(checkpoint: str | None, device: str | None, err: Console, dtype: str | None = None,
                   random_init: bool = False, cpu_int8: bool = False):
    """The Segmenter, or exit 2 with the loader's message (which says how to get a checkpoint);
    the untrained-preset warning is shown as a console line rather than a Python warning."""
    import warnings

    from agvas.infer.segmenter import Segmenter

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            segmenter = Segmenter.from_pretrained(checkpoint, device=device, dtype=dtype, random_init=random_init,
                                                  cpu_int8=cpu_int8)
        except (OSError, ValueError, RuntimeError) as e:
            err.print(f"[red]error:[/red] {e}")
            raise typer.Exit(2) from None
    for w in caught:
        if w.category.__name__ == "UntrainedModelWarning":
            err.print(f"[yellow]warning:[/yellow] {w.message}")
    return segmenter


def segment(
    paths: list[str] = typer.Argument(..., help="image files, folders (their images) or glob patterns"),
    mode: str = typer.Option("direct", help=MODES_TEXT),
    instruction: str | None = typer.Option(None, help="replace the mode's fixed question"),
    expectation: str | None = typer.Option(None, help=f"normal-appearance sentence (needed by {EXPECTATION_MODE})"),
    checkpoint: str | None = typer.Option(None, help=CHECKPOINT_HELP),
    out: Path = typer.Option(Path("segment_out"), help="output folder (one run at a time)"),
    batch_size: int = typer.Option(8, min=1, help="images per forward pass"),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 ... [default: cuda if available]"),
    max_new_tokens: int = typer.Option(256, min=1, help="answer length limit of the generating modes"),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, min=1,
                                   help="skip images with more pixels than this (read from the header)"),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="redo images that already have their pictures and record in OUT"),
    threshold: float = typer.Option(0.5, min=0.0, max=0.999, help="cut on P for the mask (the paper's 0.5)"),
    min_area: float = typer.Option(0.0, "--min-area", min=0.0, max=0.999,
                                   help="empty masks covering less than this share of the image (0: off; "
                                        "agvas calibrate chooses it)"),
    cpu_int8: bool = typer.Option(False, "--cpu-int8", help=CPU_INT8_HELP),
) -> None:
    """Segment anomalies; writes <stem>_mask.png (0/255), <stem>_heat.png, <stem>_overlay.png, results.jsonl."""
    from agvas.cli.model import _quiet_transformers
    from agvas.data.folder_lock import LOCK_FILE, FolderBusyError, folder_lock
    from agvas.infer.decision import Decision
    from agvas.infer.distributed import Distributed
    from agvas.infer.images import expand_paths
    from agvas.io import quiet_bomb_warnings

    err = Console(stderr=True)
    check_mode_flags(mode, expectation, err)
    quiet_bomb_warnings()
    found = expand_paths(paths)
    failures = list(found.problems)
    for problem in found.problems:
        err.print(f"[yellow]skipped[/yellow] {escape(problem)}")
    if not found.paths:
        err.print("[red]error:[/red] no images to segment")
        raise typer.Exit(1)
    dist = Distributed.detect()
    if dist.world > 1 and device is None and dist.device is not None:
        device = str(dist.device)  # one GPU per process, as accelerate assigned them
    who = f"[rank {dist.rank}/{dist.world}] " if dist.world > 1 else ""
    prepare_out(out, err)
    try:
        with folder_lock(out, name=LOCK_FILE if dist.is_main else f".agvas.rank-{dist.rank:03d}.lock"):
            done, skipped = _run(found.paths, len(found.problems), out, failures, err, overwrite=overwrite,
                                 load=lambda: (_quiet_transformers(), load_segmenter(checkpoint, device, err,
                                                                                      cpu_int8=cpu_int8))[1],
                                 options={"instruction": instruction, "mode": mode, "expectation": expectation,
                                          "max_new_tokens": max_new_tokens,
                                          "decision": Decision(threshold, min_area)},
                                 batch_size=batch_size, max_pixels=max_pixels, dist=dist,
                                 provenance={"checkpoint": checkpoint, "cpu_int8": cpu_int8})
            if dist.world > 1:
                dist.barrier()  # every shard file is complete
                if dist.is_main:
                    merge_results(out, [str(p.resolve()) for p in found.paths])
    except FolderBusyError as e:
        err.print(f"[red]error:[/red] {who}{escape(str(e))}")
        raise typer.Exit(2) from None
    if skipped:
        err.print(f"{who}{skipped} already done in {escape(str(out))} (kept; --overwrite redoes them)")
    err.print(f"{who}{done} image(s) segmented into {escape(str(out))}; {len(failures)} failed")
    if failures:
        raise typer.Exit(1)


def _run(paths: list[Path], n_problems: int, out: Path, failures: list[str], err: Console, *, overwrite: bool,
         load: Callable[[], Any], options: dict[str, Any], batch_size: int, max_pixels: int,
         dist: Distributed, provenance: dict[str, Any] | None = None) -> tuple[int, int]:
    """Segment this process's share of `paths` into the locked `out`; returns (segmented, skipped as done).

    Every record carries what made it beyond the model's own summary (`provenance`: the checkpoint as
    given, --cpu-int8; and the instruction and expectation), so a rerun that changes any of them redoes the
    image instead of keeping a result of another run.

    Rank r of W takes inputs r, r+W, ... of the whole list, so the split never depends on how far the
    other processes are. The progress bar counts every input given, the ones already reported as
    problems included, so three paths of which one is missing show 3/3 at the end rather than 2/2. The
    model is loaded only when some image needs it.
    """
    log = ResultsLog(out, None if dist.world == 1 else shard_file(dist.rank, dist.world))
    try:
        keyed = [(path, str(path.resolve())) for path in paths]
        stems = plan_stems(keyed, log.records)
        mine = keyed[dist.rank::dist.world]
        decision = options["decision"]
        made_by = {**(provenance or {}), "instruction": options["instruction"], "expectation": options["expectation"]}
        settings = {"mode": options["mode"], "threshold": decision.threshold, "min_area": decision.min_area,
                    **made_by}
        todo = [(path, key) for path, key in mine if overwrite or not is_done(out, log.records.get(key), settings)]
        done = 0
        problems = n_problems if dist.is_main else 0
        progress = Progress(TextColumn("segment"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=err)
        with progress:
            task = progress.add_task("segment", total=len(mine) + problems,
                                     completed=problems + len(mine) - len(todo))
            segmenter = load() if todo else None
            for path, key, image, result in segmented(segmenter, todo, batch_size=batch_size,
                                                      max_pixels=max_pixels, failures=failures, err=err,
                                                      advance=lambda: progress.advance(task), **options):
                log.add({**_save(out, key, image, result, stems[key]), **made_by})
                if not result.anchors_found:
                    err.print(f"[yellow]note[/yellow] {escape(str(path))}: {result.note}")
                done += 1
    finally:
        log.close()
    return done, len(mine) - len(todo)


def segmented(segmenter: Any, items: Sequence[tuple[Path, T]], *, batch_size: int, max_pixels: int,
              failures: list[str], err: Console, advance: Callable[[], object],
              **options: Any) -> Iterator[tuple[Path, T, Any, Any]]:
    """(path, tag, image, result) for each (path, tag) whose image could be read and segmented, batch by
    batch. A file that cannot be read, or an image that fails even alone (`run_isolated`), is reported,
    added to `failures` and skipped; `advance` is called once per item either way."""
    from agvas.infer.images import ImageLoadError, load_image
    from agvas.infer.isolation import run_isolated

    for start in range(0, len(items), batch_size):
        batch = []
        for path, tag in items[start:start + batch_size]:
            try:
                batch.append((path, tag, load_image(path, max_pixels=max_pixels)))
            except ImageLoadError as e:
                failures.append(str(e))
                err.print(f"[yellow]skipped[/yellow] {escape(str(e))}")
                advance()
        if not batch:
            continue
        results = run_isolated(lambda chunk: segmenter.segment([image for _, _, image in chunk],
                                                               batch_size=len(chunk), **options), batch)
        for (path, tag, image), result in zip(batch, results, strict=True):
            advance()
            if isinstance(result, Exception):
                failures.append(f"{path}: {result}")
                err.print(f"[yellow]failed[/yellow] {escape(str(path))}: {escape(str(result))}")
                continue
            yield path, tag, image, result


def _save(out: Path, key: str, image, result, stem: str) -> dict:
    from agvas.infer.render import save_result_images

    names = save_result_images(out, stem, image, result)
    record = result.summary()
    record["path"] = key
    record.update(names)
    return record
