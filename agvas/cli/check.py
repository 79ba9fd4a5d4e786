"""`agvas check`: the real-size run of `agvas.check.run` on CPU, or with `--device cuda` the GPU check of
`agvas.check.gpu` (random-init backbones, no download either way) to JSON."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from agvas.model.config import PRESETS, VARIANTS

DEVICE_PRESETS = {"cpu": "llava-ov-0.5b", "cuda": "llava-ov-7b"}


def check(
    preset: str | None = typer.Option(None, help=f"one of {', '.join(PRESETS)} [default: llava-ov-0.5b on cpu, "
                                      "llava-ov-7b on cuda]"),
    variant: str = typer.Option("agvas", help=f"one of {', '.join(VARIANTS)}"),
    random_init: bool = typer.Option(False, "--random-init", help="the published architecture with random "
                                     "weights (the check needs no download); required on cpu, implied on cuda"),
    device: str = typer.Option("cpu", help="cpu: build, one step, save/load, five modes at real size; cuda: "
                               "the GPU check (bf16; training steps under accelerate/DeepSpeed ZeRO-2, "
                               "fast path vs generation, 8/4-bit) within --budget-minutes"),
    out: Path = typer.Option(Path("check.json"), help="where to write the JSON report"),
    workdir: Path | None = typer.Option(None, help="where backbones and checkpoints are written (about 35 GB "
                                        "at 7B) [default: a temporary folder, removed after]"),
    max_new_tokens: int = typer.Option(8, min=1, help="cpu: answer cap of the generating modes (random weights)"),
    budget_minutes: float = typer.Option(7.0, min=0.0, help="cuda: wall-time budget of the parts; a part "
                                         "starts only if its expected time is left"),
    steps: int = typer.Option(4, min=1, help="cuda: optimiser steps of the training part"),
    micro_batch: int = typer.Option(2, min=1, help="cuda: samples per forward"),
    global_batch: int = typer.Option(4, min=1, help="cuda: samples per optimiser step (gradient accumulation)"),
    deepspeed: Path | None = typer.Option(None, help="cuda: DeepSpeed config of the training part "
                                          "[default: configs/deepspeed/zero2.json]"),
    no_deepspeed: bool = typer.Option(False, "--no-deepspeed", help="cuda: train under plain accelerate"),
) -> None:
    """Check the paper's scale without a download: real-size CPU run (default) or the GPU check (--device cuda)."""
    import shutil
    import tempfile

    from agvas.cli.model import _quiet_transformers

    err = Console(stderr=True)
    if device not in DEVICE_PRESETS:
        raise typer.BadParameter(f"device must be one of {list(DEVICE_PRESETS)}, got {device!r}")
    preset = preset or DEVICE_PRESETS[device]
    if device == "cpu" and not random_init:
        raise typer.BadParameter("only --random-init is supported: real weights need no check of shapes")
    if preset not in PRESETS or preset == "tiny" or variant not in VARIANTS:
        raise typer.BadParameter(f"preset must be one of {[p for p in PRESETS if p != 'tiny']}, "
                                 f"variant one of {list(VARIANTS)}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise typer.BadParameter("--device cuda: CUDA is not available here (torch "
                                     f"{torch.__version__}); the CPU check is --device cpu")
        if global_batch % micro_batch:
            raise typer.BadParameter(f"--global-batch {global_batch} must be a multiple of --micro-batch "
                                     f"{micro_batch}")
    _quiet_transformers()
    work = workdir or Path(tempfile.mkdtemp(prefix="agvas-check-"))
    try:
        if device == "cuda":
            _gpu(preset, variant, out, work, budget_minutes, steps, micro_batch, global_batch,
                 None if no_deepspeed else deepspeed, no_deepspeed, err)
        else:
            _cpu(preset, variant, out, work, max_new_tokens, err)
    finally:
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def _cpu(preset: str, variant: str, out: Path, work: Path, max_new_tokens: int, err: Console) -> None:
    from agvas.check.run import CheckFailed, run_check
    from agvas.io import atomic_write_json

    try:
        with err.status("checking ...") as status:
            report = run_check(preset, variant, workdir=work, max_new_tokens=max_new_tokens,
                               progress=lambda stage: status.update(f"checking {preset}: {stage} ..."))
    except CheckFailed as e:
        err.print(f"[red]check failed:[/red] {e}")
        raise typer.Exit(1) from None
    atomic_write_json(out, report)
    for name, stage in report["stages"].items():
        err.print(f"{name:<11} {stage['seconds']:>8.1f} s   peak RSS {stage['peak_rss_mib']:>8.0f} MiB")
    err.print(f"passed in {report['total_seconds']:.0f} s, peak RSS {report['peak_rss_mib']:.0f} MiB -> {out}")


def _gpu(preset: str, variant: str, out: Path, work: Path, budget_minutes: float, steps: int, micro_batch: int,
         global_batch: int, deepspeed: Path | None, no_deepspeed: bool, err: Console) -> None:
    from agvas.check.gpu import ZERO2_CONFIG, run_gpu_check, summary_lines

    ds = None if no_deepspeed else (deepspeed or ZERO2_CONFIG)
    # No status spinner: the training loop draws its own progress bar, and two live displays clash.
    report = run_gpu_check(preset, variant, device="cuda", workdir=work, out=out, budget_s=60 * budget_minutes,
                           steps=steps, micro_batch=micro_batch, global_batch=global_batch, deepspeed_config=ds,
                           progress=lambda part: err.print(f"[bold]gpu check:[/bold] {part} ..."))
    for line in summary_lines(report):
        err.print(line, markup=False, highlight=False)
    err.print(f"-> {out}")
    if not report["passed"]:
        raise typer.Exit(1)
