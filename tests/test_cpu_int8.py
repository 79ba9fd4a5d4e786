"""The CPU's cheaper numeric path (`cpu_int8`): masks close to fp32's, and wired through the API and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.ao.nn.quantized import dynamic as qdynamic
from typer.testing import CliRunner

from agvas.cli import app
from agvas.infer import Segmenter
from agvas.infer.loading import DEFAULT_CHECKPOINT
from agvas.infer.quantize import CPU_INT8_KEEP_FP32, CPU_INT8_PARTS, check_cpu_int8

EXAMPLES = Path(__file__).resolve().parents[1] / "agvas" / "serve" / "static" / "examples"
MIN_IOU = 0.99


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _kinds(module: nn.Module) -> set[type]:
    return {type(m) for m in module.modules()}


@pytest.fixture(scope="module")
def pair() -> tuple[Segmenter, Segmenter]:
    return (Segmenter.from_pretrained(DEFAULT_CHECKPOINT, device="cpu"),
            Segmenter.from_pretrained(DEFAULT_CHECKPOINT, device="cpu", cpu_int8=True))


def test_int8_masks_match_fp32_on_the_shipped_checkpoint(pair):
    """The gate of the option: on the trained checkpoint's example images (real and synthetic defects),
    every mask has IoU >= 0.99 against fp32's, and the answers and decisions are the same."""
    fp32, int8 = pair
    images = sorted(EXAMPLES.glob("*.jpg"))
    assert len(images) >= 5
    for a, b in zip(fp32.segment(images), int8.segment(images), strict=True):
        assert a.mask.any(), a.source  # a non-empty mask, or the IoU would say nothing
        assert iou(a.mask, b.mask) >= MIN_IOU, (a.source, iou(a.mask, b.mask))
        assert (a.text, a.anomalous) == (b.text, b.anomalous)
        assert np.abs(a.anomaly_map - b.anomaly_map).max() < 0.01  # measured: <= 0.003


def test_int8_converts_exactly_the_chosen_parts(pair):
    """The LLM's (but its MLP output projections) and the semantic encoder's Linear layers become dynamic
    int8; SAM's image encoder and what AG-VAS adds stay fp32, so the pixel features are bit-identical."""
    fp32, int8 = pair
    assert CPU_INT8_PARTS == ("language_model", "semantic_encoder") and CPU_INT8_KEEP_FP32 == ("down_proj",)
    model = int8.model
    assert qdynamic.Linear in _kinds(model.semantic_encoder) and nn.Linear not in _kinds(model.semantic_encoder)
    for name, module in model.language_model.named_modules():
        if isinstance(module, nn.Linear | qdynamic.Linear):
            assert type(module) is (nn.Linear if name.endswith("down_proj") else qdynamic.Linear), name
    for part in (model.pixel_encoder, model.spam, model.refiner, model.decoder, model.lm_head):
        assert qdynamic.Linear not in _kinds(part)
    assert int8.cpu_int8 and not fp32.cpu_int8
    pixels = fp32.prepare_images([np.full((40, 40, 3), 128, np.uint8)])
    with torch.inference_mode():
        torch.testing.assert_close(int8.model.pixel_encoder(pixels["sam_pixels"]),
                                   fp32.model.pixel_encoder(pixels["sam_pixels"]), rtol=0, atol=0)


def test_int8_refuses_other_devices_and_dtypes():
    check_cpu_int8(torch.device("cpu"), torch.float32)
    with pytest.raises(ValueError, match="CPU only"):
        check_cpu_int8(torch.device("cuda"), torch.float32)
    with pytest.raises(ValueError, match="fp32"):
        Segmenter.from_pretrained(DEFAULT_CHECKPOINT, device="cpu", dtype="bf16", cpu_int8=True)


def test_cli_bench_and_segment_take_cpu_int8(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["bench", "--cpu-int8", "--images", "1", "--repeats", "1", "--size", "64",
                              "--out", str(tmp_path / "b.json")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["cpu_int8"] is True and report["dtype"] == "float32"
    assert report["encoder_input_px"] == {"semantic": 96, "pixel": 256}  # the tiny checkpoint's encoders
    image = sorted(EXAMPLES.glob("*.jpg"))[0]
    res = runner.invoke(app, ["segment", str(image), "--cpu-int8", "--out", str(tmp_path / "seg")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "seg" / f"{image.stem}_mask.png").is_file()
    res = runner.invoke(app, ["bench", "--cpu-int8", "--dtype", "bf16", "--images", "1", "--out",
                              str(tmp_path / "c.json")])
    assert res.exit_code == 2 and "fp32" in res.output
