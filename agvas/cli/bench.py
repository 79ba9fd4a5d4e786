"""`agvas bench`: the inference benchmark (fast vs generation, throughput, memory, stage times) to JSON."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from agvas.cli.common import CHECKPOINT_HELP, CPU_INT8_HELP


def bench(
    out: Path = typer.Option(Path("bench.json"), help="where to write the JSON report"),
    checkpoint: str | None = typer.Option(None, help=CHECKPOINT_HELP),
    images: int = typer.Option(16, min=1, help="number of (synthetic) images"),
    size: int = typer.Option(512, min=8, help="image side in pixels"),
    device: str | None = typer.Option(None, help="cpu, cuda, ... [default: cuda if available]"),
    dtype: str | None = typer.Option(None, help="bf16, fp16 or fp32 [default: bf16 on CUDA, fp32 on CPU]"),
    repeats: int = typer.Option(3, min=1, help="repeats of the throughput runs (median)"),
    preset: str | None = typer.Option(None, help="benchmark an untrained preset (same as --checkpoint PRESET)"),
    random_init: bool = typer.Option(False, "--random-init", help="with a real preset: its published "
                                     "architecture with random weights, no download (real input sizes)"),
    cpu_int8: bool = typer.Option(False, "--cpu-int8", help=CPU_INT8_HELP),
    serve_load: bool = typer.Option(False, "--serve-load", help="also load-test `agvas serve` in-process on a "
                                                                "loopback port: 8 clients, 200 requests (p50/p95)"),
) -> None:
    """Measure inference speed and memory of a checkpoint on synthetic images."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from agvas.cli.model import _quiet_transformers
    from agvas.cli.segment import load_segmenter
    from agvas.infer.bench import benchmark_calls, run_benchmark, synthetic_images
    from agvas.io import atomic_write_json

    err = Console(stderr=True)
    _quiet_transformers()
    if preset is not None and checkpoint is not None:
        raise typer.BadParameter("give --preset or --checkpoint, not both")
    segmenter = load_segmenter(preset or checkpoint, device, err, dtype, random_init=random_init, cpu_int8=cpu_int8)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err) as bar:
        task = bar.add_task(f"benchmarking {images} image(s) of {size}x{size}: loading",
                            total=benchmark_calls(images, repeats=repeats))
        report = run_benchmark(segmenter, synthetic_images(images, (size, size)), repeats=repeats,
                               progress=lambda phase: bar.update(task, advance=1, description=(
                                   f"benchmarking {images} image(s) of {size}x{size}: {phase}")))
        bar.update(task, description=f"benchmarked {images} image(s) of {size}x{size}")
    if serve_load:
        from agvas.serve.loadtest import serve_load_benchmark

        with err.status("load-testing the HTTP server: 8 clients, 200 requests ..."):
            report["serve_load"] = load = serve_load_benchmark(segmenter, clients=8, requests=200)
        err.print(f"server: {load['succeeded']}/{load['requests']} ok, p50 {load['latency_ms']['p50']:.1f} ms, "
                  f"p95 {load['latency_ms']['p95']:.1f} ms, {load['throughput_rps']:.1f} req/s")
    atomic_write_json(out, report)
    tp = report["throughput_images_per_s"]
    err.print(f"fast {report['latency_ms']['fast']:.1f} ms, generation {report['latency_ms']['generation']:.1f} ms "
              f"(x{report['fast_vs_generation_speedup']:.2f}); throughput {tp['batch_1']:.2f} img/s at batch 1, "
              f"{tp['batch_8']:.2f} at batch 8; overhead {report['overhead_ratio']:.3f}; "
              f"peak RSS {report['peak_rss_mib']:.0f} MiB -> {out}")
