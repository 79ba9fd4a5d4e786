"""`agvas data prepare NAME SRC DST`: turn a published dataset into DST/meta.json.

Problems with single files are reported as they are met and summed up at the end; the exit code
tells scripts whether the conversion was complete (0), partial (1) or impossible (2).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agvas.data.converters import (
    CONVERTERS,
    ConversionReport,
    LayoutError,
    NothingValidError,
    Result,
    Skip,
    get_converter,
    run_converter,
)
from agvas.io import DEFAULT_MAX_PIXELS, quiet_bomb_warnings

EXIT_COMPLETE, EXIT_PARTIAL, EXIT_FAILED = 0, 1, 2

_HELP = (
    "Convert dataset NAME from its publisher's layout in SRC to DST/meta.json.\n\n"
    f"NAME is one of: {', '.join(CONVERTERS)}.\n\n"
    "DST becomes the dataset root: images are symlinked into it at their path in SRC (copied where "
    "symlinks fail, or with --copy), and masks that need converting (JPEG, label maps, .mat) are written "
    "as 0/255 PNGs under DST/masks/. DST may be SRC. Every image/mask pair is checked; a bad one is "
    "named and skipped, and the rest is converted.\n\n"
    "Exit codes: 0 every image converted (or left out by the publisher's design, such as "
    "CrackForest's images without ground truth); 1 some files were skipped (meta.json is written for the "
    "rest); 2 nothing converted: SRC is missing or not the NAME layout, or no valid pair was found "
    "(no meta.json is written)."
)


def register(app: typer.Typer) -> None:
    """Add `prepare` to `agvas data`."""
    app.command("prepare", help=_HELP, no_args_is_help=True)(prepare)


def prepare(
    name: str = typer.Argument(..., help=f"Dataset: {', '.join(CONVERTERS)}."),
    src: Path = typer.Argument(..., help="The dataset as published (unpacked)."),
    dst: Path = typer.Argument(..., help="Dataset root to write meta.json (and converted masks) into."),
    cls: str | None = typer.Option(None, "--cls", help="folder only: class name (default: SRC's folder name)."),
    missing_mask: str | None = typer.Option(
        None, "--missing-mask",
        help="folder only: what an image without a mask in masks/ is: 'skip' (default) or 'normal'.",
    ),
    copy: bool = typer.Option(False, "--copy", help="Copy images instead of symlinking them."),
    verify_images: bool = typer.Option(
        False, "--verify-images", help="Decode every image fully (slower; also catches truncated files).",
    ),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Threads (default: CPUs, at most 8)."),
    max_pixels: int = typer.Option(
        DEFAULT_MAX_PIXELS, "--max-pixels", min=1,
        help="Skip images and masks with more pixels than this, judged from the header before decoding.",
    ),
) -> None:
    """Problems are printed as they are met, so a long conversion shows them without waiting."""
    out = Console()
    err = Console(stderr=True)
    options: dict[str, str] = {}
    if cls is not None:
        options["cls_name"] = cls
    if missing_mask is not None:
        if missing_mask not in ("skip", "normal"):
            raise typer.BadParameter("must be 'skip' or 'normal'", param_hint="--missing-mask")
        options["missing_mask"] = missing_mask
    if name.lower() not in CONVERTERS:
        raise typer.BadParameter(f"unknown dataset {name!r}; known: {', '.join(CONVERTERS)}", param_hint="NAME")
    if options and name.lower() != "folder":
        raise typer.BadParameter("--cls and --missing-mask apply to the 'folder' converter only")
    converter = get_converter(name, **options)
    quiet_bomb_warnings()

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=True,
    ) as progress:
        task = progress.add_task(f"converting {converter.title}", total=None)

        def on_result(result: Result) -> None:
            if isinstance(result, Skip):
                progress.console.print(f"[yellow]skipped[/] {escape(result.detail)}")
            progress.advance(task)

        try:
            report = run_converter(
                converter, src, dst, link="copy" if copy else "symlink", verify_images=verify_images,
                workers=workers, max_pixels=max_pixels, on_found=lambda n: progress.update(task, total=n),
                on_result=on_result,
            )
        except (LayoutError, NothingValidError) as exc:
            progress.stop()
            err.print(f"[red]error:[/] {escape(str(exc))}")
            raise typer.Exit(EXIT_FAILED) from None
    _print_summary(out, report)
    raise typer.Exit(EXIT_PARTIAL if any(not s.by_design for s in report.skipped) else EXIT_COMPLETE)


def _print_summary(console: Console, report: ConversionReport) -> None:
    table = Table(title=f"{report.dataset}: {report.n_entries} images in {report.seconds:.1f} s")
    for column in ("split", "class", "normal", "anomalous", "total"):
        table.add_column(column, justify="left" if column in ("split", "class") else "right")
    for split in ("train", "test"):
        for cls, entries in sorted(report.entries.get(split, {}).items()):
            anomalous = sum(e.anomaly for e in entries)
            table.add_row(split, escape(cls), str(len(entries) - anomalous), str(anomalous), str(len(entries)))
    console.print(table)
    if report.skipped:
        skipped = Table(title=f"skipped: {len(report.skipped)} files")
        skipped.add_column("reason")
        skipped.add_column("files", justify="right")
        for reason, n in sorted(report.skipped_by_reason().items()):
            skipped.add_row(reason, str(n))
        console.print(skipped)
    console.print(f"wrote {escape(str(report.meta_path))}")
