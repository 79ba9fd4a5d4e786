"""The GPU check: the paper's size (random LLaVA-OV-7B + SAM ViT-H, bf16) trained and run on one GPU.

The first run at 7B would otherwise be a user's paid GPU hour, and every dtype, memory or launcher bug
of that path (DeepSpeed's bf16 casting, ZeRO-2 with a frozen 7B LLM, bitsandbytes on the real widths)
would surface there. So one command goes through the user's own code paths, with random weights and no
download, inside a fixed time budget, and writes one JSON:

1. backbones: random backbones of the preset drawn on the device and written with `save_pretrained`
   in the run's dtype, laid out as downloaded checkpoints are;
2. train: `agvas.train.loop.train` itself (not a loop written for the check) on a synthetic recipe:
   a few optimiser steps at micro-batch 2 with gradient accumulation, under accelerate with DeepSpeed
   ZeRO-2 (`configs/deepspeed/zero2.json`, unchanged) where DeepSpeed and CUDA are there, and under plain
   accelerate otherwise, saying why; step time, images/s and peak GPU memory from its own log;
3. bench: `agvas.infer.bench.run_benchmark` on the trained checkpoint: fast path vs generation latency;
4. quantize_8bit / quantize_4bit: `Segmenter.from_pretrained(..., load_in_8bit/4bit)`, or the reason it
   cannot run here (no bitsandbytes, no CUDA).

Each part is guarded: a failure is recorded (error and traceback tail) and the later parts still run,
on an untrained checkpoint if training failed. A part starts only if the budget has the seconds it is
expected to need left, and training is given a time limit that leaves room for the rest, so the run
stops cleanly; the JSON is rewritten after every part, so even a killed run leaves what it measured.

The same function runs on CPU with a shrunken architecture, which is how the test suite covers it.
"""

from __future__ import annotations

import csv
import gc
import importlib.metadata
import importlib.util
import os
import platform
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from agvas.infer.bench import peak_rss_mib
from agvas.io import atomic_write_json
from agvas.model.config import preset_config
from agvas.model.random_init import Overrides

# From this file, not the working directory: the check is launched from anywhere.
ZERO2_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "deepspeed" / "zero2.json"

PARTS = ("backbones", "train", "bench", "quantize_8bit", "quantize_4bit")

NEEDS_S: dict[str, float] = {"backbones": 60.0, "train": 150.0, "bench": 50.0, "quantize_8bit": 50.0,
                             "quantize_4bit": 50.0}
"""Seconds each part is expected to need at 7B on one H200 (estimates: no GPU has run this yet). A part
starts only with this much budget left; training gets what remains after the later parts' needs."""

DEFAULT_BUDGET_S = 420.0
"""7 minutes of parts: with the imports, CUDA start-up and the JSON, the command ends within 8."""


class PartSkipped(Exception):
    """A part that cannot run here (a missing package, no CUDA): recorded as skipped, not as a failure."""


@dataclass
class Budget:
    """Wall seconds left for the check; `clock` is injectable so that the budget logic is testable."""

    seconds: float
    clock: Callable[[], float] = time.perf_counter
    start: float = field(init=False)

    def __post_init__(self) -> None:
        self.start = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.start

    def remaining(self) -> float:
        return self.seconds - self.elapsed()

    def allows(self, need_s: float) -> bool:
        return self.remaining() >= need_s


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cuda(device: torch.device) -> bool:
    return device.type == "cuda"


def _reset_peak(device: torch.device) -> None:
    if _cuda(device):
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gpu_mib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if _cuda(device) else None


def _release(device: torch.device) -> float | None:
    """Free what the previous part dropped; the GPU memory still held after it (a leak shows here)."""
    gc.collect()
    if not _cuda(device):
        return None
    torch.cuda.empty_cache()
    return round(torch.cuda.memory_allocated(device) / 2**20, 1)


def _run_part(report: dict, name: str, fn: Callable[[], dict], budget: Budget, need_s: float,
              device: torch.device, save: Callable[[], None], say: Callable[[str], None]) -> dict:
    if not budget.allows(need_s):
        entry: dict[str, Any] = {"status": "skipped", "reason": f"budget: {max(budget.remaining(), 0):.0f} s left "
                                 f"of {budget.seconds:.0f} s, this part needs about {need_s:.0f} s"}
        report["stopped_by_budget"] = True
    else:
        say(name)
        _reset_peak(device)
        start = time.perf_counter()
        try:
            entry = {"status": "ok", **fn()}
        except PartSkipped as why:
            entry = {"status": "skipped", "reason": str(why)}
        except Exception as err:  # recorded, and the next part still runs: that is the point of the check
            entry = {"status": "failed", "error": f"{type(err).__name__}: {err}"[:2000],
                     "traceback_tail": traceback.format_exc()[-3000:]}
        entry["seconds"] = round(time.perf_counter() - start, 2)
        entry["peak_gpu_mib"] = _peak_gpu_mib(device)
        entry["peak_rss_mib"] = round(peak_rss_mib(), 1)
        entry["gpu_mib_held_after"] = _release(device)
    report["parts"][name] = entry
    save()
    return entry


def deepspeed_decision(config: str | Path | None, device: torch.device) -> tuple[str | None, str]:
    """The DeepSpeed config the training part will use (None: plain accelerate) and why."""
    if config is None:
        return None, "not asked for (--no-deepspeed): the steps ran under accelerate without DeepSpeed"
    if importlib.util.find_spec("deepspeed") is None:
        return None, ("NOT RUN: deepspeed is not installed (pip install deepspeed); the steps ran under "
                      "accelerate without DeepSpeed, so ZeRO-2 is untested by this run")
    if not _cuda(device):
        return None, ("NOT RUN: DeepSpeed ZeRO-2 needs CUDA here; the steps ran under accelerate without "
                      "DeepSpeed, so ZeRO-2 is untested by this run")
    if not Path(config).is_file():
        raise FileNotFoundError(f"DeepSpeed config {config} not found")
    return str(config), "ZeRO-2 in one process"


def _single_process_env() -> str:
    """DeepSpeed initialises torch.distributed from the environment; one process without a launcher sets it
    here, so `agvas check --device cuda` also runs without `accelerate launch` (the script uses it)."""
    if "WORLD_SIZE" in os.environ:
        return "launcher (WORLD_SIZE set)"
    for key, value in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29511"), ("RANK", "0"),
                       ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
        os.environ.setdefault(key, value)
    return "none: the check set a one-process torch.distributed environment"


def _read_log(path: Path) -> list[dict[str, float]]:
    with path.open() as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]


def _train_part(preset: str, variant: str, backbones: tuple[Path, Path], out: Path, device: torch.device,
                steps: int, micro_batch: int, global_batch: int, image_size: int, seed: int,
                deepspeed: str | None, ds_reason: str, time_limit_s: float, num_workers: int) -> dict:
    from agvas.data.recipe import DataSection
    from agvas.train.config import ModelSection, OptimSection, TrainConfig

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != 1:
        raise PartSkipped(f"the GPU check trains in one process; {world} were launched")
    launcher = _single_process_env() if deepspeed else "not needed"
    cfg = TrainConfig(out=str(out), seed=seed, steps=steps, micro_batch=micro_batch, global_batch=global_batch,
                      mixed_precision="bf16" if _cuda(device) else "no", eval_every=10**9, save_every=10**9,
                      log_every=1, time_limit_minutes=max(time_limit_s, 1.0) / 60, deepspeed=deepspeed,
                      model=ModelSection(preset=preset, variant=variant, lmm=str(backbones[0]),
                                         sam=str(backbones[1])),
                      data=DataSection(image_size=image_size, num_workers=num_workers),
                      optim=OptimSection(warmup_steps=1))
    result = train(cfg, command=f"agvas check --device {device.type}")
    rows = [r for r in _read_log(out / "log.csv") if "images_per_s" in r]
    step_s = [global_batch / r["images_per_s"] for r in rows]
    steady = step_s[1:] or step_s  # the first step carries the CUDA/DeepSpeed warm-up
    median = statistics.median(steady) if steady else None
    return {
        "steps_done": result.step, "steps_planned": steps, "micro_batch": micro_batch, "global_batch": global_batch,
        "gradient_accumulation": global_batch // micro_batch, "mixed_precision": cfg.mixed_precision,
        "deepspeed": {"used": deepspeed is not None, "config": deepspeed, "note": ds_reason, "launcher": launcher},
        "time_limit_s": round(time_limit_s, 1),
        "step_seconds": [round(s, 3) for s in step_s],
        "step_seconds_median_after_first": round(median, 3) if median else None,
        "images_per_s": round(global_batch / median, 3) if median else None,
        "losses": [round(r.get("loss", float("nan")), 4) for r in rows],
        "loop_seconds_with_state_save": round(result.seconds, 2),
        "checkpoint": str(out / "final"),
    }


def _untrained_checkpoint(preset: str, variant: str, backbones: tuple[Path, Path], folder: Path) -> Path:
    from agvas.model.build import build_model

    if not (folder / "agvas_config.json").is_file():
        model = build_model(preset, variant, lmm=str(backbones[0]), sam=str(backbones[1]))
        model.save_pretrained(folder)
        del model
    return folder


def _bench_part(checkpoint: Path, device: torch.device, image_size: int, images: int) -> dict:
    from agvas.infer.bench import run_benchmark, synthetic_images
    from agvas.infer.segmenter import Segmenter

    t0 = time.perf_counter()
    seg = Segmenter.from_pretrained(checkpoint, device=device)
    load_s = time.perf_counter() - t0
    bench = run_benchmark(seg, synthetic_images(images, (image_size, image_size)), warmup=1, repeats=1,
                          large_batch=min(2, images))
    keep = ("dtype", "images", "image_size", "latency_ms", "fast_vs_generation_speedup", "llm_stage_speedup",
            "generation", "throughput_images_per_s", "stages_ms", "generation_stages_ms", "overhead_ratio",
            "peak_cuda_mib")
    return {"load_seconds": round(load_s, 2), **{k: bench[k] for k in keep}}


def _quantize_part(bits: int, checkpoint: Path, device: torch.device, image_size: int) -> dict:
    from agvas.infer.quantize import QuantizationUnavailableError, quantization_config
    from agvas.infer.segmenter import Segmenter

    flags = {"load_in_8bit": bits == 8, "load_in_4bit": bits == 4}
    try:
        quantization_config(device=device, **flags)
    except QuantizationUnavailableError as why:
        raise PartSkipped(f"skipped: {why}") from None
    t0 = time.perf_counter()
    seg = Segmenter.from_pretrained(checkpoint, device=device, **flags)
    load_s = time.perf_counter() - t0
    lm = seg.model.language_model
    lm_bytes = sum(t.numel() * t.element_size() for t in (*lm.parameters(), *lm.buffers()))
    return {"bits": bits, "load_seconds": round(load_s, 2), "language_model_mib": round(lm_bytes / 2**20, 1),
            "latency_ms": _one_image_latency(seg, image_size), "bitsandbytes": _version("bitsandbytes")}


def _one_image_latency(seg: Any, image_size: int) -> dict[str, float]:
    """Fast path and generation on one image, after a warm-up (the quantised copies' figures), measured as
    the bench part measures them."""
    from agvas.infer.bench import run_benchmark, synthetic_images

    bench = run_benchmark(seg, synthetic_images(1, (image_size, image_size)), warmup=1, repeats=1, large_batch=1)
    return {name: round(ms, 1) for name, ms in bench["latency_ms"].items()}


def run_gpu_check(preset: str = "llava-ov-7b", variant: str = "agvas", *, device: str | torch.device = "cuda",
                  workdir: str | Path, out: str | Path | None = None, budget_s: float = DEFAULT_BUDGET_S,
                  needs_s: dict[str, float] | None = None, steps: int = 4, micro_batch: int = 2,
                  global_batch: int = 4, image_size: int = 512, bench_images: int = 2,
                  deepspeed_config: str | Path | None = ZERO2_CONFIG, architecture_overrides: Overrides | None = None,
                  num_workers: int | None = None, seed: int = 0, clock: Callable[[], float] = time.perf_counter,
                  progress: Callable[[str], None] | None = None) -> dict:
    """Run the parts of this module's docstring; return the report (also written to `out` after each part).

    Never raises for a part's failure: `report["passed"]` is True only if every part ran and succeeded.
    `architecture_overrides` shrink the preset (the CPU test); `needs_s` replaces the 7B estimates.
    """
    dev = torch.device(device)
    if _cuda(dev) and not torch.cuda.is_available():
        raise RuntimeError("device cuda asked for, but CUDA is not available here")
    if global_batch % micro_batch:
        raise ValueError(f"global_batch {global_batch} must be a multiple of micro_batch {micro_batch}")
    needs = {**NEEDS_S, **(needs_s or {})}
    budget = Budget(budget_s, clock)
    work = Path(workdir)
    say = progress or (lambda part: None)
    dtype = torch.bfloat16 if _cuda(dev) else torch.float32
    config = preset_config(preset, variant)
    ds_config, ds_reason = deepspeed_decision(deepspeed_config, dev)
    report: dict[str, Any] = {
        "kind": "agvas gpu check", "preset": preset, "variant": variant, "random_init": True,
        "backbones": {"lmm": config.lmm, "sam": config.sam}, "architecture_overrides": architecture_overrides or {},
        "device": str(dev), "gpu": torch.cuda.get_device_name(dev) if _cuda(dev) else None,
        "gpu_total_mib": round(torch.cuda.get_device_properties(dev).total_memory / 2**20) if _cuda(dev) else None,
        "dtype": str(dtype).removeprefix("torch."), "budget_seconds": budget_s, "needs_seconds": needs,
        "settings": {"steps": steps, "micro_batch": micro_batch, "global_batch": global_batch,
                     "image_size": image_size, "bench_images": bench_images,
                     "deepspeed_config": str(deepspeed_config) if deepspeed_config else None},
        "zero2": {"run": ds_config is not None, "note": ds_reason},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "cuda": torch.version.cuda, **{p: _version(p) for p in (
                         "transformers", "accelerate", "peft", "deepspeed", "bitsandbytes")}},
        "parts": {}, "stopped_by_budget": False,
    }

    def save() -> None:
        report["elapsed_seconds"] = round(budget.elapsed(), 2)
        if out is not None:
            atomic_write_json(out, report)

    def part(name: str, fn: Callable[[], dict]) -> dict:
        return _run_part(report, name, fn, budget, needs[name], dev, save, say)

    backbones = (work / "backbones" / "lmm", work / "backbones" / "sam")
    part("backbones", lambda: _backbones_part(config.lmm, config.sam, work / "backbones", dev, dtype, seed,
                                              architecture_overrides))
    have_backbones = report["parts"]["backbones"]["status"] == "ok"

    def train_part() -> dict:
        if not have_backbones:
            raise PartSkipped("skipped: no backbones (their part did not succeed)")
        later = sum(needs[p] for p in PARTS[PARTS.index("train") + 1:])
        # The loop counts its limit from its first step; loading and the final save come on top.
        limit = budget.remaining() - later - needs["train"] / 2
        return _train_part(preset, variant, backbones, work / "train", dev, steps, micro_batch, global_batch,
                           image_size, seed, ds_config, ds_reason, limit,
                           num_workers if num_workers is not None else (2 if _cuda(dev) else 0))

    trained = part("train", train_part)
    checkpoint: dict[str, Path] = {}

    def model_checkpoint() -> Path:
        """The trained checkpoint, or (training failed) an untrained one, so inference is still measured."""
        if "path" not in checkpoint:
            if trained["status"] == "ok":
                checkpoint["path"], report["inference_checkpoint"] = Path(trained["checkpoint"]), "trained"
            elif have_backbones:
                checkpoint["path"] = _untrained_checkpoint(preset, variant, backbones, work / "untrained")
                report["inference_checkpoint"] = "untrained (the training part did not succeed)"
            else:
                raise PartSkipped("skipped: no backbones (their part did not succeed)")
        return checkpoint["path"]

    part("bench", lambda: _bench_part(model_checkpoint(), dev, image_size, bench_images))
    for bits in (8, 4):
        part(f"quantize_{bits}bit", lambda bits=bits: _quantize_part(bits, model_checkpoint(), dev, image_size))

    report["passed"] = all(report["parts"][p]["status"] == "ok" for p in PARTS)
    report["total_seconds"] = round(budget.elapsed(), 2)
    save()
    return report


def _backbones_part(lmm_id: str, sam_id: str, folder: Path, device: torch.device, dtype: torch.dtype, seed: int,
                    overrides: Overrides | None) -> dict:
    from agvas.model.random_init import write_random_backbones

    lmm_dir, sam_dir = write_random_backbones(lmm_id, sam_id, folder, seed, overrides, device, dtype)
    sizes = {name: sum(f.stat().st_size for f in d.glob("*.safetensors")) for name, d in (("lmm", lmm_dir),
                                                                                           ("sam", sam_dir))}
    return {"folder": str(folder), "safetensors_mib": {k: round(v / 2**20, 1) for k, v in sizes.items()}}


def summary_lines(report: dict) -> list[str]:
    """The few figures a person reads first, one line each (the JSON holds everything)."""
    lines = [f"{report['preset']} on {report['gpu'] or report['device']} ({report['dtype']}), "
             f"{report['elapsed_seconds']:.0f} s of a {report['budget_seconds']:.0f} s budget"]
    for name, entry in report["parts"].items():
        status = entry["status"]
        extra = entry.get("reason") or entry.get("error") or ""
        peak = entry.get("peak_gpu_mib")
        where = f", peak GPU {peak:.0f} MiB" if peak is not None else ""
        seconds = f" {entry['seconds']:.0f} s" if "seconds" in entry else ""
        lines.append(f"  {name:<14} {status:<8}{seconds}{where} {extra}".rstrip())
    tr, be = report["parts"].get("train", {}), report["parts"].get("bench", {})
    if tr.get("status") == "ok":
        lines.append(f"  train: {tr['step_seconds_median_after_first']} s/step, {tr['images_per_s']} images/s "
                     f"(micro-batch {tr['micro_batch']}, global {tr['global_batch']}); "
                     f"DeepSpeed: {tr['deepspeed']['note']}")
    if be.get("status") == "ok":
        lat = be["latency_ms"]
        lines.append(f"  inference: fast {lat['fast']:.0f} ms vs generation {lat['generation']:.0f} ms "
                     f"({be['fast_vs_generation_speedup']:.2f}x)")
    lines.append("passed" if report.get("passed") else "NOT all parts passed (see the JSON)")
    return lines


def train(cfg: Any, command: str | None = None) -> Any:
    """The project's training loop (imported late: accelerate and the data stack load only when needed).
    A module-level name, so that a test can make the training part fail on purpose."""
    from agvas.train.loop import train as loop_train

    return loop_train(cfg, command=command)
