"""`agvas check`: the real-size run of `agvas.check.run` (random-init backbones, no download) to JSON."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from agvas.model.config import PRESETS, VARIANTS


def check(
    preset: str = typer.Option("llava-ov-0.5b", help=f"one of {', '.join(PRESETS)}"),
    variant: str = typer.Option("agvas", help=f"one of {', '.join(VARIANTS)}"),
    random_init: bool = typer.Option(False, "--random-init", help="required for now: the published "
                                     "architecture with random weights (the check needs no download)"),
    out: Path = typer.Option(Path("check.json"), help="where to write the JSON report"),
    workdir: Path | None = typer.Option(None, help="where backbones and the checkpoint are written "
                                        "[default: a temporary folder, removed after]"),
    max_new_tokens: int = typer.Option(8, min=1, help="answer cap of the generating modes (random weights)"),
) -> None:
    """Build, train one step, save/load and run every mode at a preset's real size on CPU; report times."""
    import shutil
    import tempfile

    from agvas.check.run import CheckFailed, run_check
    from agvas.cli.model import _quiet_transformers
    from agvas.data.io import atomic_write_json

    err = Console(stderr=True)
    if not random_init:
        raise typer.BadParameter("only --random-init is supported: real weights need no check of shapes")
    if preset not in PRESETS or variant not in VARIANTS:
        raise typer.BadParameter(f"preset must be one of {list(PRESETS)}, variant one of {list(VARIANTS)}")
    _quiet_transformers()
    work = workdir or Path(tempfile.mkdtemp(prefix="agvas-check-"))
    try:
        with err.status("checking ...") as status:
            report = run_check(preset, variant, workdir=work, max_new_tokens=max_new_tokens,
                               progress=lambda stage: status.update(f"checking {preset}: {stage} ..."))
    except CheckFailed as e:
        err.print(f"[red]check failed:[/red] {e}")
        raise typer.Exit(1) from None
    finally:
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    atomic_write_json(out, report)
    for name, stage in report["stages"].items():
        err.print(f"{name:<11} {stage['seconds']:>8.1f} s   peak RSS {stage['peak_rss_mib']:>8.0f} MiB")
    err.print(f"passed in {report['total_seconds']:.0f} s, peak RSS {report['peak_rss_mib']:.0f} MiB -> {out}")
