"""One-run inference benchmark: fast vs generation latency, throughput, memory, and where the time goes.

Every figure is defined once, here and in the README's Speed section, and the JSON's figures agree with
each other because each comes from the same measurement:

- one warm-up call per path, then one timed pass per path over the N images, one image per call, with
  the stage timer installed (it reads the clock at stage boundaries; on CUDA it also synchronises);
- `end_to_end_ms` = `latency_ms.fast`: the mean wall time of one fast-path call (`segment([image])`);
  `latency_ms.generation`: the same for the generation path;
- `stages_ms[s]`: the mean time of the fast-path calls in stage s; `stages_sum_ms` = their sum;
  `overhead_ratio` = `end_to_end_ms / stages_sum_ms` (time in no stage; 1.0 means none);
- `fast_vs_generation_speedup` = `latency_ms.generation / latency_ms.fast`; `llm_stage_speedup` =
  `generation_stages_ms.llm / stages_ms.llm`;
- `throughput_images_per_s[batch_b]` = N / the median over `repeats` of the wall time to segment all N
  images at batch size b (timer removed);
- `cpu_int8`: whether the backbones ran dynamic int8 (`--cpu-int8`); `encoder_input_px`: the two encoders'
  input sides, which (not the images' size) set the encoders' and the LLM's cost.

Means, not medians, so that the stage times add up to a per-call figure. The generation path is capped
at the direct answer's length (+ its end-of-turn token): a model that does produce the direct answer
takes exactly those steps, and an untrained one is not charged for rambling, so the ratio compares the
two paths doing the same work.
"""

from __future__ import annotations

import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import transformers

from agvas.anchors import direct_answer
from agvas.infer.segmenter import Segmenter
from agvas.infer.timing import STAGES, NullTimer, StageTimer

SPEEDUP_AIM = 3.0
OVERHEAD_AIM = 1.15


def synthetic_images(n: int, size: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """Random-texture RGB images (the content does not change the cost of any stage)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def peak_rss_mib() -> float:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def answer_steps(segmenter: Segmenter) -> int:
    """Decoding steps of a model that generates the direct answer: its tokens plus the end-of-turn token."""
    tok = segmenter.model.tokenizer
    return len(tok(direct_answer(segmenter.anchors), add_special_tokens=False).input_ids) + 1


Progress = Callable[[str], None]
"""Called once after each timed call with the phase's name, so that a caller can show progress."""


def benchmark_calls(n: int, warmup: int = 1, repeats: int = 3) -> int:
    """How many times `run_benchmark` calls its progress callback (the progress bar's total)."""
    return 3 * warmup + 2 * n + 2 * repeats


def _timed_pass(segmenter: Segmenter, images: Sequence[np.ndarray], call: Callable[[np.ndarray], object],
                progress: Progress, phase: str) -> tuple[list[float], dict[str, list[float]], list[object]]:
    """Per image: the call's wall seconds, its seconds in each stage, and its result."""
    timer = StageTimer(segmenter.device)
    segmenter.timer = timer
    per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
    end_to_end, results = [], []
    try:
        for im in images:
            timer.reset()
            start = time.perf_counter()
            results.append(call(im))
            end_to_end.append(time.perf_counter() - start)
            stages = timer.reset()
            for s in STAGES:
                per_stage[s].append(stages.get(s, 0.0))
            progress(phase)
    finally:
        segmenter.timer = NullTimer()
    return end_to_end, per_stage, results


def _mean_ms(seconds: Sequence[float]) -> float:
    return 1000 * statistics.fmean(seconds)


def run_benchmark(segmenter: Segmenter, images: Sequence[np.ndarray], warmup: int = 1, repeats: int = 3,
                  large_batch: int = 8, progress: Progress | None = None) -> dict:
    """Measure `segmenter` on `images`; the figures are defined in this module's docstring."""
    images = list(images)
    n = len(images)
    if n == 0:
        raise ValueError("the benchmark needs at least one image")
    report = progress or (lambda phase: None)
    steps = answer_steps(segmenter)
    big = min(large_batch, n)
    for _ in range(warmup):
        segmenter.segment(images[:1])
        report("warm-up")
        segmenter.segment(images[:1], fast=False, max_new_tokens=steps)
        report("warm-up")
        segmenter.segment(images[:big], batch_size=big)
        report("warm-up")

    fast, fast_stages, _ = _timed_pass(segmenter, images, lambda im: segmenter.segment([im]), report, "fast path")
    generated, gen_stages, results = _timed_pass(
        segmenter, images, lambda im: segmenter.segment([im], fast=False, max_new_tokens=steps), report,
        "generation path")
    answer = direct_answer(segmenter.anchors)
    reproduced = sum(r[0].text == answer for r in results)  # type: ignore[index]

    throughput = {}
    for key, bs in (("batch_1", 1), (f"batch_{large_batch}", big)):
        walls = []
        for _ in range(repeats):
            walls.append(_timed(lambda bs=bs: segmenter.segment(images, batch_size=bs)))
            report(f"throughput, batch {bs}")
        throughput[key] = n / statistics.median(walls)

    fast_ms, gen_ms = _mean_ms(fast), _mean_ms(generated)
    stages_ms = {s: _mean_ms(v) for s, v in fast_stages.items()}
    gen_stages_ms = {s: _mean_ms(v) for s, v in gen_stages.items()}
    stages_sum_ms = sum(stages_ms.values())
    overhead = fast_ms / max(stages_sum_ms, 1e-9)
    device = segmenter.device
    cuda_peak = (torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else None
    return {
        "checkpoint": segmenter.source,
        "model": segmenter.model.config.name,
        "device": str(device),
        "dtype": str(segmenter.dtype).removeprefix("torch."),
        "cpu_int8": segmenter.cpu_int8,
        "encoder_input_px": {"semantic": segmenter.model.processor.semantic.size,
                             "pixel": segmenter.model.processor.pixel.size},
        "images": n,
        "image_size": list(images[0].shape[:2]),
        "torch_threads": torch.get_num_threads(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__},
        "latency_ms": {"fast": fast_ms, "generation": gen_ms},
        "fast_vs_generation_speedup": gen_ms / fast_ms,
        "generation": {"max_new_tokens": steps, "answer_reproduced_fraction": reproduced / n},
        "throughput_images_per_s": throughput,
        "throughput_batch_sizes": [1, big],
        "peak_rss_mib": peak_rss_mib(),
        "peak_cuda_mib": cuda_peak,
        "stages_ms": stages_ms,
        "generation_stages_ms": gen_stages_ms,
        # What the fast path removes is LLM time; the encoders are shared by both paths and bound the
        # end-to-end ratio when they dominate (small LLMs, CPU).
        "llm_stage_speedup": gen_stages_ms["llm"] / max(stages_ms["llm"], 1e-9),
        "stages_sum_ms": stages_sum_ms,
        "end_to_end_ms": fast_ms,
        "overhead_ratio": overhead,
        "aims": {"speedup_at_least": SPEEDUP_AIM, "overhead_at_most": OVERHEAD_AIM},
        "meets_aims": {"speedup": gen_ms / fast_ms >= SPEEDUP_AIM, "overhead": overhead <= OVERHEAD_AIM},
    }
