"""One-run inference benchmark: fast vs generation latency, throughput, memory, and where the time goes.

Numbers are medians after warm-up, under torch.inference_mode (the segmenter's paths use it). The
generation path is capped at the direct answer's length (+ its end-of-turn token): a model that does
produce the direct answer takes exactly those steps, and an untrained one is not charged for rambling,
so the ratio compares the two paths doing the same work. Stage times come from the segmenter's own
stage hooks; overhead = end-to-end time / sum of the stages, i.e. how much time is not in any stage.
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


def _stage_times(segmenter: Segmenter, images: Sequence[np.ndarray], call: Callable[[np.ndarray], object],
                 ) -> tuple[dict[str, list[float]], list[float], list[float]]:
    """Per image: seconds in each stage, end-to-end seconds, and end-to-end / sum of the stages."""
    timer = StageTimer(segmenter.device)
    segmenter.timer = timer
    per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
    end_to_end, ratios = [], []
    try:
        for im in images:
            timer.reset()
            e2e = _timed(lambda im=im: call(im))
            stages = timer.reset()
            for s in STAGES:
                per_stage[s].append(stages.get(s, 0.0))
            end_to_end.append(e2e)
            ratios.append(e2e / max(sum(stages.values()), 1e-12))
    finally:
        segmenter.timer = NullTimer()
    return per_stage, end_to_end, ratios


def run_benchmark(segmenter: Segmenter, images: Sequence[np.ndarray], warmup: int = 1, repeats: int = 3,
                  large_batch: int = 8) -> dict:
    images = list(images)
    n = len(images)
    if n == 0:
        raise ValueError("the benchmark needs at least one image")
    steps = answer_steps(segmenter)
    big = min(large_batch, n)
    for _ in range(warmup):
        segmenter.segment(images[:1])
        segmenter.segment(images[:1], fast=False, max_new_tokens=steps)
        segmenter.segment(images[:big], batch_size=big)

    fast = [_timed(lambda im=im: segmenter.segment([im])) for im in images]
    generated, reproduced = [], 0
    answer = direct_answer(segmenter.anchors)
    for im in images:
        start = time.perf_counter()
        result = segmenter.segment([im], fast=False, max_new_tokens=steps)[0]
        generated.append(time.perf_counter() - start)
        reproduced += result.text == answer

    throughput = {}
    for key, bs in (("batch_1", 1), (f"batch_{large_batch}", big)):
        total = statistics.median(_timed(lambda bs=bs: segmenter.segment(images, batch_size=bs))
                                  for _ in range(repeats))
        throughput[key] = n / total

    per_stage, end_to_end, ratios = _stage_times(segmenter, images, lambda im: segmenter.segment([im]))
    gen_stage, _, _ = _stage_times(segmenter, images,
                                   lambda im: segmenter.segment([im], fast=False, max_new_tokens=steps))

    ms = lambda xs: 1000 * statistics.median(xs)  # noqa: E731
    fast_ms, gen_ms = ms(fast), ms(generated)
    overhead = statistics.median(ratios)
    device = segmenter.device
    cuda_peak = (torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else None
    return {
        "checkpoint": segmenter.source,
        "model": segmenter.model.config.name,
        "device": str(device),
        "dtype": str(segmenter.dtype).removeprefix("torch."),
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
        "stages_ms": {s: ms(v) for s, v in per_stage.items()},
        "generation_stages_ms": {s: ms(v) for s, v in gen_stage.items()},
        # What the fast path removes is LLM time; the encoders are shared by both paths and bound the
        # end-to-end ratio when they dominate (small LLMs, CPU).
        "llm_stage_speedup": ms(gen_stage["llm"]) / max(ms(per_stage["llm"]), 1e-9),
        "stages_sum_ms": sum(ms(v) for v in per_stage.values()),
        "end_to_end_ms": ms(end_to_end),
        "overhead_ratio": overhead,
        "aims": {"speedup_at_least": SPEEDUP_AIM, "overhead_at_most": OVERHEAD_AIM},
        "meets_aims": {"speedup": gen_ms / fast_ms >= SPEEDUP_AIM, "overhead": overhead <= OVERHEAD_AIM},
    }
