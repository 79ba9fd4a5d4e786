"""`agvas check --device cuda`'s code path (`agvas.check.gpu`) on CPU, with a shrunken random-init preset.

What this covers: the JSON's fields; the training part through the project's own training loop (two
optimiser steps, gradient accumulation 2) under accelerate without DeepSpeed, and the JSON saying why
ZeRO-2 did not run; the inference part through `run_benchmark`; the quantisation parts recorded as
skipped with bitsandbytes' / CUDA's absence as the reason; a failing part recorded while the later parts
still run; the budget skipping parts cleanly. What it does not: anything of CUDA, DeepSpeed, bitsandbytes
or the 7B sizes (scripts/gpu_check.sh on a GPU machine does).
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from test_architectures import SHRINK

import agvas.check.gpu as gpu
from agvas.check.gpu import PARTS, ZERO2_CONFIG, Budget, deepspeed_decision, run_gpu_check, summary_lines

NO_WAIT = dict.fromkeys(PARTS, 0.0)
SMALL = {"architecture_overrides": SHRINK, "image_size": 96, "bench_images": 1, "micro_batch": 1,
         "global_batch": 2, "needs_s": NO_WAIT}


def test_gpu_check_runs_its_parts_on_cpu_and_writes_one_json(tmp_path):
    out = tmp_path / "gpu.json"
    report = run_gpu_check("llava-ov-0.5b", device="cpu", workdir=tmp_path / "work", out=out, steps=2, **SMALL)
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert list(report["parts"]) == list(PARTS)
    for key in ("preset", "device", "dtype", "budget_seconds", "versions", "settings", "zero2", "total_seconds"):
        assert key in report
    assert report["device"] == "cpu" and report["dtype"] == "float32" and report["gpu"] is None
    parts = report["parts"]
    assert all(p["seconds"] >= 0 and p["peak_rss_mib"] > 0 and p["peak_gpu_mib"] is None for p in parts.values())

    train = parts["train"]
    assert train["status"] == "ok", train.get("traceback_tail")
    assert train["steps_done"] == 2 and train["gradient_accumulation"] == 2 and train["micro_batch"] == 1
    assert len(train["step_seconds"]) == 2 and all(s > 0 for s in train["step_seconds"])
    assert train["images_per_s"] > 0 and all(loss == loss for loss in train["losses"])
    assert not train["deepspeed"]["used"] and not report["zero2"]["run"]
    reason = report["zero2"]["note"]
    assert reason.startswith("NOT RUN") and ("not installed" if importlib.util.find_spec("deepspeed") is None
                                             else "needs CUDA") in reason

    bench = parts["bench"]
    assert bench["status"] == "ok" and report["inference_checkpoint"] == "trained"
    assert bench["latency_ms"]["fast"] > 0 and bench["latency_ms"]["generation"] > 0
    assert bench["fast_vs_generation_speedup"] > 0
    for bits in (8, 4):
        q = parts[f"quantize_{bits}bit"]
        assert q["status"] == "skipped" and q["reason"].startswith("skipped:")
        assert "bitsandbytes" in q["reason"] or "CUDA" in q["reason"]
    assert report["passed"] is False  # the quantisation parts did not run here
    assert not report["stopped_by_budget"]
    assert any("fast" in line and "generation" in line for line in summary_lines(report))


def test_a_failing_part_is_recorded_and_the_later_parts_still_run(tmp_path, monkeypatch):
    def broken_training(cfg, command=None):
        raise RuntimeError("boom in the training loop")

    seen = {}

    def fake_bench(checkpoint, device, image_size, images):
        seen["checkpoint"] = checkpoint
        return {"latency_ms": {"fast": 1.0, "generation": 2.0}, "fast_vs_generation_speedup": 2.0}

    monkeypatch.setattr(gpu, "train", broken_training)
    monkeypatch.setattr(gpu, "_bench_part", fake_bench)
    report = run_gpu_check("llava-ov-0.5b", device="cpu", workdir=tmp_path, out=None, steps=1, **SMALL)
    train = report["parts"]["train"]
    assert train["status"] == "failed" and "boom in the training loop" in train["error"]
    assert "broken_training" in train["traceback_tail"]
    # Inference is still measured, on an untrained checkpoint written from the same backbones.
    assert report["parts"]["bench"]["status"] == "ok"
    assert report["inference_checkpoint"].startswith("untrained")
    assert (seen["checkpoint"] / "agvas_config.json").is_file()
    assert report["passed"] is False


def test_the_budget_skips_parts_cleanly_and_still_writes_the_json(tmp_path):
    ticks = iter(range(0, 10_000, 10))  # every reading of the clock is 10 s later
    budget = Budget(25, clock=lambda: float(next(ticks)))
    assert budget.allows(15) and not budget.allows(15) and budget.remaining() == -5

    out = tmp_path / "gpu.json"
    report = run_gpu_check("llava-ov-0.5b", device="cpu", workdir=tmp_path, out=out, budget_s=30,
                           needs_s={"backbones": 60.0}, architecture_overrides=SHRINK)
    parts = json.loads(out.read_text())["parts"]
    assert list(parts) == list(PARTS)
    assert parts["backbones"]["status"] == "skipped" and parts["backbones"]["reason"].startswith("budget:")
    assert all(p["status"] == "skipped" for p in parts.values())
    assert report["stopped_by_budget"] and report["passed"] is False
    assert not (tmp_path / "backbones").exists()


def test_deepspeed_decision_says_why_zero2_does_not_run():
    assert deepspeed_decision(None, torch.device("cpu"))[0] is None
    config, reason = deepspeed_decision(ZERO2_CONFIG, torch.device("cpu"))
    assert config is None and reason.startswith("NOT RUN")
    assert ZERO2_CONFIG.is_file()


def test_cli_refuses_cuda_without_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    from typer.testing import CliRunner

    from agvas.cli import app

    result = CliRunner().invoke(app, ["check", "--device", "cuda", "--out", str(tmp_path / "x.json")],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "CUDA is not available" in result.output
    assert not (tmp_path / "x.json").exists()
