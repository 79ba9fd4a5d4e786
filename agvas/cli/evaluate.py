"""`agvas eval`: the protocol's metrics of a checkpoint (or the training-free reference) on a meta.json
dataset, and `agvas eval --compare RUN...` to put earlier runs side by side.

Runs under `accelerate launch` (or torchrun) unchanged: images are sharded over the processes and the
main process writes the same report a single process would. Several GPUs:
`accelerate launch --multi_gpu --num_processes N -m agvas.cli eval ...`. Several CPU processes:
`ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes N -m agvas.cli eval ...` or
`torchrun --nproc_per_node N -m agvas.cli eval ...` — `accelerate launch --cpu` starts a single process
whatever --num_processes says (its CPU launcher needs mpirun for more).

An image that cannot be read, or whose header claims more than --max-pixels, is reported and skipped;
the rest is evaluated and the exit code is 1. meta.json paths that are absolute or climb out of the
dataset root with `..` are refused (exit 2) unless --allow-outside-root; so is a split without images.
The output folder is locked for the run: a second run into it refuses (`agvas.data.folder_lock`).
"""

from __future__ import annotations

import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from agvas.cli.common import CHECKPOINT_HELP
from agvas.io import DEFAULT_MAX_PIXELS
from agvas.modes import EXPECTATION_MODE, MODES_TEXT

if TYPE_CHECKING:
    from agvas.evaluate.runner import EvalSettings
    from agvas.infer.distributed import Distributed

DEFAULT_OUT = Path("eval_out")
DEFAULT_COMPARE_OUT = Path("eval_compare")


def evaluate(
    runs: list[Path] | None = typer.Argument(None, help="with --compare: run folders (or their metrics.json)",
                                             show_default=False),
    compare: bool = typer.Option(False, "--compare", help="compare earlier runs instead of evaluating"),
    data: Path | None = typer.Option(None, "--data", help="dataset root holding meta.json"),
    checkpoint: str | None = typer.Option(None, help=CHECKPOINT_HELP),
    method: str = typer.Option("agvas", help="agvas or median-deviation (training-free reference)"),
    mode: str = typer.Option("direct", help=MODES_TEXT),
    expectation: str | None = typer.Option(None, help=f"normal-appearance sentence (needed by {EXPECTATION_MODE})"),
    image_size: int | None = typer.Option(None, "--image-size", min=8,
                                          help="resize images and GT masks to S×S first (default: native size)"),
    sigma: float = typer.Option(0.0, min=0.0, help="Gaussian smoothing of the maps before AP/F1-max (0 = off)"),
    batch_size: int = typer.Option(8, min=1, help="images per forward pass"),
    limit: int | None = typer.Option(None, min=1, help="at most N images per category, evenly spread (quick runs)"),
    split: str = typer.Option("test", help="meta.json split"),
    out: Path | None = typer.Option(None, help=f"output folder (default: {DEFAULT_OUT}; with --compare "
                                                f"{DEFAULT_COMPARE_OUT})"),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda if available)"),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, min=1,
                                   help="skip images and masks with more pixels than this (read from the header)"),
    allow_outside_root: bool = typer.Option(False, "--allow-outside-root",
                                            help="read meta.json paths that are absolute or contain '..'"),
    threshold: float | None = typer.Option(None, min=0.0, max=0.999,
                                           help="cut on P for the masks [default: the paper's 0.5]"),
    min_area: float = typer.Option(0.0, "--min-area", min=0.0, max=0.999,
                                   help="empty masks covering less than this share of the image (AG-VAS; "
                                        "choose it on data you do not report on)"),
) -> None:
    """Evaluate on a dataset: writes metrics.json, metrics.md, pr_curves.png, gallery.png and false_alarms.png
    into OUT."""
    err = Console(stderr=True)
    if compare:
        if not runs:
            err.print("[red]error:[/red] --compare needs run folders: agvas eval --compare RUN_A RUN_B ...")
            raise typer.Exit(2)
        _compare(runs, out or DEFAULT_COMPARE_OUT, err)
        return
    if runs:
        err.print(f"[red]error:[/red] unexpected argument(s) {' '.join(map(str, runs))} (did you mean --compare?)")
        raise typer.Exit(2)
    if data is None:
        err.print("[red]error:[/red] --data DATASET_ROOT is required (a folder with meta.json)")
        raise typer.Exit(2)
    from agvas.evaluate.runner import EvalSettings

    settings = EvalSettings(split=split, image_size=image_size, sigma=sigma, batch_size=batch_size, limit=limit,
                            max_pixels=max_pixels, allow_outside_root=allow_outside_root, threshold=threshold,
                            min_area=min_area)
    _evaluate(data, checkpoint, method, mode, expectation, settings, out or DEFAULT_OUT, device, err)


def _check_dataset(data: Path, split: str, allow_outside_root: bool, err: Console) -> None:
    """Exit 2 before a model is loaded when meta.json is unusable, lists no image, or leaves the root."""
    from agvas.data.meta import META_FILE, check_inside_root, load_meta
    from agvas.io import DataError

    try:
        meta = load_meta(data, split)
        if not allow_outside_root:
            check_inside_root(data, meta, split)
    except (DataError, ValueError) as e:
        err.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(2) from None
    if not any(meta.values()):
        err.print(f"[red]error:[/red] {escape(str(data / META_FILE))}: split {split!r} lists no images; nothing "
                  "to evaluate (choose another --split, or prepare the dataset with `agvas data prepare`)")
        raise typer.Exit(2)


def _evaluate(data: Path, checkpoint: str | None, method_name: str, mode: str, expectation: str | None,
              settings: EvalSettings, out: Path, device: str | None, err: Console) -> None:
    from agvas.cli.common import check_mode_flags, prepare_out
    from agvas.data.folder_lock import FolderBusyError, folder_lock
    from agvas.infer.distributed import Distributed
    from agvas.io import quiet_bomb_warnings

    _check_dataset(data, settings.split, settings.allow_outside_root, err)
    if method_name == "agvas":
        check_mode_flags(mode, expectation, err)
    quiet_bomb_warnings()
    dist = Distributed.detect()
    if dist.is_main:
        prepare_out(out, err)
        try:
            with folder_lock(out):  # the other processes only write their shards, which the main one merges
                _run(data, checkpoint, method_name, mode, expectation, settings, out, device, err, dist)
        except FolderBusyError as e:
            err.print(f"[red]error:[/red] {escape(str(e))}")
            raise typer.Exit(2) from None
    else:
        _run(data, checkpoint, method_name, mode, expectation, settings, out, device, err, dist)


def _run(data: Path, checkpoint: str | None, method_name: str, mode: str, expectation: str | None,
         settings: EvalSettings, out: Path, device: str | None, err: Console, dist: Distributed) -> None:
    """Load the method, evaluate (this process's share), and on the main process write the report."""
    from agvas.evaluate.methods import build_method
    from agvas.evaluate.report import METRICS_MD, metrics_document, write_run_report
    from agvas.evaluate.runner import run_evaluation

    started = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    if method_name == "agvas":
        from agvas.cli.model import _quiet_transformers

        _quiet_transformers()
    try:
        method = build_method(method_name, checkpoint, mode, expectation,
                              device=device if device is not None or dist.world == 1 else dist.device,
                              threshold=settings.threshold, min_area=settings.min_area)
    except (OSError, ValueError, RuntimeError) as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    load_seconds = time.perf_counter() - t0

    progress = Progress(TextColumn("eval" + (f" [{dist.rank}/{dist.world}]" if dist.world > 1 else "")),
                        BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=err, disable=not dist.is_main)
    task = progress.add_task("eval", total=None)
    with progress:
        result = run_evaluation(method, data, settings, out, dist,
                                on_start=lambda n: progress.update(task, total=n),
                                on_progress=lambda n: progress.advance(task, n))
    if result is None:  # not the main process: its images are in the main process's report
        return
    for failure in result.failed:
        err.print(f"[yellow]skipped[/yellow] {failure.path}: {failure.error}")
    run = {"command": shlex.join(["agvas", *sys.argv[1:]]), "started": started,
           "load_seconds": round(load_seconds, 3)}
    doc = metrics_document(result, method.describe(), settings, data, run)
    paths = write_run_report(out, result, doc, data, settings)
    typer.echo(paths[METRICS_MD].read_text(encoding="utf-8"))
    typer.echo(f"wrote {', '.join(str(p) for p in paths.values())}")
    if result.failed:
        err.print(f"[red]{len(result.failed)} image(s) failed[/red] (listed in metrics.json under 'failed')")
        raise typer.Exit(1)


def _compare(runs: list[Path], out: Path, err: Console) -> None:
    from agvas.evaluate.report import (
        COMPARISON_JSON,
        COMPARISON_MD,
        comparison_document,
        comparison_markdown,
        read_metrics,
        write_json,
    )
    from agvas.io import atomic_write_bytes

    docs = []
    for run in runs:
        try:
            docs.append((str(run), read_metrics(run)))
        except (OSError, ValueError) as e:
            err.print(f"[red]error:[/red] {e}")
            raise typer.Exit(2) from None
    comp = comparison_document(docs)
    text = comparison_markdown(comp)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / COMPARISON_JSON, comp)
    atomic_write_bytes(out / COMPARISON_MD, text.encode("utf-8"))
    typer.echo(text)
    typer.echo(f"wrote {out / COMPARISON_MD}, {out / COMPARISON_JSON}")
