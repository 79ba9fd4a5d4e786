"""`agvas data synth`: write a synthetic anomaly dataset (our DTD-Synthetic / Anomaly-Seg20K stand-in)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from agvas.data.synth import (
    DEFAULT_HOLDOUT_DEFECTS,
    DEFAULT_HOLDOUT_FAMILIES,
    DEFECT_KINDS,
    SynthSummary,
    generate_dataset,
)


def _names(text: str | None) -> list[str] | None:
    """'a,b' -> ['a', 'b']; '' or 'none' -> [] (an explicit empty list); None -> None (the default)."""
    if text is None:
        return None
    if text.strip().lower() in ("", "none"):
        return []
    return [t.strip() for t in text.split(",") if t.strip()]


def _report(console: Console, summary: SynthSummary, given: set[str]) -> None:
    """`given`: the holdout names the user typed. The defaults name DTD families that exist only with
    --textures; their absence is expected and not worth a warning."""
    cats = summary.categories
    ignored = [name for name in (cats.ignored if cats is not None else ()) if name in given]
    if ignored:
        console.print(f"[yellow]holdout names not among the families/kinds (ignored): {', '.join(ignored)}")
    by_split: Counter = Counter()
    for (split, _, _), c in summary.counts.items():
        by_split[split] += c
    for split in ("train", "test"):
        if not by_split[split]:
            continue
        rows = Counter()
        kinds: list[str] = []
        for (s, fam, kind), c in summary.counts.items():
            if s == split:
                rows[(fam, kind)] += c
                if kind not in kinds:
                    kinds.append(kind)
        kinds.sort(key=lambda k: (k != "good", k))
        table = Table(title=f"{split}: {by_split[split]} images", show_lines=False)
        table.add_column("family")
        for k in kinds:
            table.add_column(k, justify="right")
        for fam in sorted({f for f, _ in rows}):
            table.add_row(fam, *[str(rows[(fam, k)] or "") for k in kinds])
        console.print(table)
    console.print(f"wrote {summary.images} images to {summary.out} in {summary.seconds:.1f} s "
                  f"({summary.images_per_s:.1f} images/s)")


def synth(
    out: Path = typer.Option(..., "--out", help="Dataset folder to write (meta.json, images/, masks/)."),
    n: int = typer.Option(1000, "--n", min=0, help="Images per split written."),
    seed: int = typer.Option(0, "--seed", min=0, help="Same seed and options -> byte-identical files."),
    textures: Path | None = typer.Option(None, "--textures", exists=True, file_okay=False,
                                          help="Folder of texture class folders (e.g. DTD): each becomes "
                                               "a family dtd_<class>."),
    size: int = typer.Option(256, "--size", min=32, help="Image side in pixels."),
    normal_fraction: float = typer.Option(0.3, "--normal-fraction", min=0.0, max=1.0,
                                          help="Share of defect-free images (empty masks)."),
    families: str | None = typer.Option(None, "--families", help="Comma-separated families (default: all)."),
    defects: str | None = typer.Option(None, "--defects",
                                       help=f"Comma-separated kinds (default: {','.join(DEFECT_KINDS)})."),
    holdout_families: str | None = typer.Option(
        None, "--holdout-families", show_default=False,
        help=f"Families only in the test split ('none' for no holdout) [default: {','.join(DEFAULT_HOLDOUT_FAMILIES)}"
             ", those that exist]."),
    holdout_defects: str | None = typer.Option(
        None, "--holdout-defects", show_default=False,
        help=f"Kinds only in the test split ('none' for no holdout) [default: {','.join(DEFAULT_HOLDOUT_DEFECTS)}]."),
    split: str = typer.Option("both", "--split",
                              help="train: only categories outside the holdout; test: only pairs with a "
                                   "held-out family or kind; both: n images each."),
    workers: int = typer.Option(1, "--workers", min=1, help="Processes (output does not depend on it)."),
    nuisance: float = typer.Option(1.0, "--nuisance", min=0.0,
                                   help="Scale of illumination/noise/blur variation on every image."),
    glare: float = typer.Option(0.0, "--glare", min=0.0, max=1.0,
                                help="Chance of specular highlights on an image (good or defective)."),
    exposure: float = typer.Option(0.0, "--exposure", min=0.0, max=1.0,
                                   help="Chance of a dark or flat exposure of an image (good or defective)."),
) -> None:
    """Generate synthetic anomalies with exact masks and per-image descriptions.

    Writes images/<split>/<family>/*.png, masks/ (0/255 PNG), synth_meta.jsonl (one line per image: family, kind, location, size, shape, colour, regions, bbox, seed) and meta.json (keys "train"/"test" hold the splits; cls_name = family, specie_name = kind or "good").
    """  # noqa: E501
    if split not in ("train", "test", "both"):
        raise typer.BadParameter("must be train, test or both", param_hint="--split")
    console = Console(stderr=True)
    total = n * (2 if split == "both" else 1)
    given_families, given_defects = _names(holdout_families), _names(holdout_defects)
    given = set(given_families or []) | set(given_defects or [])
    progress = Progress(TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=console, transient=True)
    with progress:
        task = progress.add_task("synth", total=total)
        try:
            summary = generate_dataset(
                out, n, seed, textures=textures, size=size, normal_fraction=normal_fraction,
                families=_names(families), defects=_names(defects),
                holdout_families=DEFAULT_HOLDOUT_FAMILIES if given_families is None else given_families,
                holdout_defects=DEFAULT_HOLDOUT_DEFECTS if given_defects is None else given_defects,
                split=split, workers=workers, nuisance=nuisance, glare=glare, exposure=exposure,
                progress=lambda k: progress.advance(task, k))
        except ValueError as err:
            raise typer.BadParameter(str(err)) from None
    _report(console, summary, given)


def register(app: typer.Typer) -> None:
    """Add this module's commands to `agvas data`."""
    app.command("synth")(synth)
