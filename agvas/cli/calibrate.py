"""`agvas calibrate GOOD...`: choose the decision rule on your own good parts, and see what it costs.

The images are segmented in direct mode (the fast path); each map is kept as its peak and its area above
0.5 (`agvas.infer.calibration.MapStats`). A share of the good images (`--holdout`) is kept out of the
choice so that the false-alarm rate it prints for them is an honest estimate; `--defective` images, if
any, give the share of known defects the rule still finds. An image that cannot be read or segmented is
reported and left out; the others go on, and the exit code is 1 at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agvas.cli.common import CHECKPOINT_HELP, CPU_INT8_HELP
from agvas.io import DEFAULT_MAX_PIXELS


def calibrate(
    good: list[str] = typer.Argument(..., help="known-good images: files, folders or glob patterns"),
    defective: list[str] = typer.Option([], "--defective",
                                        help="known defective images (files, folders, globs; repeatable), "
                                             "to show how many the rule still finds"),
    rule: str = typer.Option("min-area", help="min-area (empty masks smaller than a share of the image) or "
                                              "threshold (raise the cut on P)"),
    false_alarm: float = typer.Option(0.2, "--false-alarm", min=0.0, max=0.99,
                                      help="the largest share of the good images the rule may flag"),
    holdout: float = typer.Option(0.3, min=0.0, max=0.9,
                                  help="share of the good images kept out of the choice, to judge it on (0: none)"),
    seed: int = typer.Option(0, help="which good images are held out"),
    checkpoint: str | None = typer.Option(None, help=CHECKPOINT_HELP),
    batch_size: int = typer.Option(8, min=1, help="images per forward pass"),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 ... [default: cuda if available]"),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, min=1,
                                   help="skip images with more pixels than this (read from the header)"),
    cpu_int8: bool = typer.Option(False, "--cpu-int8", help=CPU_INT8_HELP),
    out: Path | None = typer.Option(None, help="also write the rule and its rates here (JSON)"),
) -> None:
    """Choose --threshold or --min-area on good images so that at most --false-alarm of them are flagged."""
    from agvas.cli.model import _quiet_transformers
    from agvas.cli.segment import load_segmenter
    from agvas.infer.calibration import RULES, calibrate, split_holdout
    from agvas.infer.images import expand_paths
    from agvas.io import atomic_write_json, quiet_bomb_warnings

    err = Console(stderr=True)
    if rule not in RULES:
        err.print(f"[red]error:[/red] --rule must be one of {', '.join(RULES)}, got {escape(rule)}")
        raise typer.Exit(2)
    quiet_bomb_warnings()
    goods, bads = expand_paths(good), expand_paths(defective)
    failures = [*goods.problems, *bads.problems]
    for problem in failures:
        err.print(f"[yellow]skipped[/yellow] {escape(problem)}")
    if not goods.paths:
        err.print("[red]error:[/red] no good images to calibrate on")
        raise typer.Exit(1)
    try:
        kept, held = split_holdout(goods.paths, holdout, seed)
    except ValueError as e:
        err.print(f"[red]error:[/red] {escape(str(e))} (--holdout 0 calibrates on all of them)")
        raise typer.Exit(2) from None
    _quiet_transformers()
    segmenter = load_segmenter(checkpoint, device, err, cpu_int8=cpu_int8)
    progress = Progress(TextColumn("segment"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err)
    with progress:
        task = progress.add_task("segment", total=len(goods.paths) + len(bads.paths))
        stats = [_map_stats(segmenter, paths, batch_size, max_pixels, failures, err, lambda: progress.advance(task))
                 for paths in (kept, held, bads.paths)]
    if not stats[0]:
        err.print("[red]error:[/red] no good image could be segmented to calibrate on")
        raise typer.Exit(1)
    try:
        result = calibrate(stats[0], rule, false_alarm, holdout=stats[1], defective=stats[2])
    except ValueError as e:  # e.g. a good image masked whole: no rule of this kind clears it
        err.print(f"[red]error:[/red] {escape(str(e))}; try the other --rule or a larger --false-alarm")
        raise typer.Exit(1) from None
    Console().print(_table(result))
    print(result.flags())
    if out is not None:
        atomic_write_json(out, {**result.as_dict(), "checkpoint": checkpoint, "holdout_share": holdout,
                                "seed": seed, "failed": failures})
        err.print(f"written to {escape(str(out))}")
    if failures:
        err.print(f"{len(failures)} input(s) failed and were left out")
        raise typer.Exit(1)


def _map_stats(segmenter, paths: Sequence[Path], batch_size: int, max_pixels: int, failures: list[str],
               err: Console, advance) -> list:
    """MapStats of each image that could be read and segmented (direct mode); the others go to `failures`."""
    from agvas.cli.segment import segmented
    from agvas.infer.calibration import MapStats

    return [MapStats.of(result.anomaly_map)
            for *_, result in segmented(segmenter, [(path, None) for path in paths], batch_size=batch_size,
                                        max_pixels=max_pixels, failures=failures, err=err, advance=advance)]


def _table(result) -> Table:
    table = Table(title=f"rule: {result.rule}, chosen for at most {100 * result.false_alarm_target:.0f} % "
                        "false alarms")
    for column in ("images", "count", "paper's rule", "chosen rule"):
        table.add_column(column, justify="left" if column == "images" else "right")
    rows = (("good, calibrated on: flagged", result.calibration), ("good, held out: flagged", result.holdout),
            ("defective: found", result.defective))
    for name, rate in rows:
        if rate is not None:
            table.add_row(name, str(rate.images), f"{100 * rate.paper:.1f} %", f"{100 * rate.chosen:.1f} %")
    return table
