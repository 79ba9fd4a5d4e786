"""`agvas segment`, `agvas chat` and `agvas bench` through typer's CliRunner on a fitted tiny checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from model_fixtures import build
from PIL import Image
from test_infer import fit_direct_answer, random_images
from typer.testing import CliRunner

from agvas.cli import app
from agvas.model.config import preset_config

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tiny_backbones, tmp_path_factory) -> Path:
    model = build(preset_config("tiny"), tiny_backbones)
    fit_direct_answer(model)
    return model.save_pretrained(tmp_path_factory.mktemp("cli") / "ckpt")


@pytest.fixture
def inputs(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    rgb, wide, tall = random_images()
    Image.fromarray(rgb).save(folder / "rgb.png")
    Image.fromarray(wide[..., 0]).save(folder / "grey.jpg")  # a greyscale JPEG, 80x48
    Image.fromarray(tall).save(folder / "tall.bmp")
    (folder / "broken.png").write_bytes(b"\x89PNG but then nothing")
    return folder


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_segment_folder_skips_a_broken_file_and_reruns_without_duplicates(checkpoint, inputs, tmp_path):
    out = tmp_path / "out"
    res = runner.invoke(app, ["segment", str(inputs), "--checkpoint", str(checkpoint), "--out", str(out),
                              "--batch-size", "2", "--device", "cpu"])
    assert res.exit_code == 1, res.output  # the broken file fails the run, but only after the others
    assert "broken.png" in res.output
    records = _records(out)
    assert sorted(Path(r["path"]).name for r in records) == ["grey.jpg", "rgb.png", "tall.bmp"]
    for r in records:
        assert {"path", "text", "score", "anomalous", "area_fraction", "mode"} <= set(r)
        assert r["mode"] == "direct" and r["text"] == "Sure, it is [NOR][ANO][SEG]." and 0 <= r["score"] <= 1
        src = Image.open(r["path"])
        mask = np.asarray(Image.open(out / r["mask"]))
        assert mask.shape == (src.height, src.width) and set(np.unique(mask)) <= {0, 255}
        assert r["area_fraction"] == pytest.approx((mask > 0).mean(), abs=1e-6)
        assert r["anomalous"] == bool(mask.any())
        for key in ("overlay", "heat"):
            assert np.asarray(Image.open(out / r[key])).shape == (src.height, src.width, 3)
    assert {p.name for p in out.iterdir()} >= {"rgb_mask.png", "rgb_overlay.png", "rgb_heat.png", "grey_mask.png"}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left behind

    again = runner.invoke(app, ["segment", str(inputs / "rgb.png"), str(inputs / "tall.bmp"), "--checkpoint",
                                str(checkpoint), "--out", str(out), "--device", "cpu"])
    assert again.exit_code == 0, again.output
    assert [r["path"] for r in _records(out)] == [r["path"] for r in records]  # updated in place, no duplicates


def test_segment_glob_with_clashing_stems(checkpoint, tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        Image.fromarray(random_images()[0]).save(tmp_path / sub / "x.png")
    out = tmp_path / "out"
    res = runner.invoke(app, ["segment", str(tmp_path / "*" / "x.png"), "--checkpoint", str(checkpoint),
                              "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    masks = sorted(r["mask"] for r in _records(out))
    assert len(masks) == 2 and masks[0] != masks[1]


def test_segment_usage_errors(checkpoint, tmp_path):
    res = runner.invoke(app, ["segment", str(tmp_path), "--mode", "describe-plus", "--checkpoint", str(checkpoint)])
    assert res.exit_code == 2 and "expectation" in res.output
    res = runner.invoke(app, ["segment", str(tmp_path / "nothing*.png"), "--checkpoint", str(checkpoint)])
    assert res.exit_code == 1 and "no image" in res.output
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    res = runner.invoke(app, ["segment", str(tmp_path / "x.png"), "--checkpoint", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_chat_reads_stdin_and_saves_masks(checkpoint, tmp_path):
    image = tmp_path / "img.png"
    Image.fromarray(random_images()[1]).save(image)
    out = tmp_path / "chat"
    res = runner.invoke(app, ["chat", str(image), "--checkpoint", str(checkpoint), "--out", str(out),
                              "--max-new-tokens", "12", "--device", "cpu"],
                        input="Please segment the anomalies in this image.\n\nWhy?\nexit\nnever asked\n")
    assert res.exit_code == 0, res.output
    answers = [line for line in res.output.splitlines() if line.startswith("assistant> ")]
    assert len(answers) == 2 and answers[0] == "assistant> Sure, it is [NOR][ANO][SEG]."
    mask = np.asarray(Image.open(out / "turn1_mask.png"))
    assert mask.shape == (48, 80) and set(np.unique(mask)) <= {0, 255}


def test_bench_writes_its_report(checkpoint, tmp_path):
    out = tmp_path / "bench.json"
    res = runner.invoke(app, ["bench", "--out", str(out), "--checkpoint", str(checkpoint), "--images", "2",
                              "--size", "48", "--repeats", "1", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    for key in ("fast_vs_generation_speedup", "peak_rss_mib", "overhead_ratio", "end_to_end_ms", "stages_sum_ms"):
        assert report[key] > 0, key
    assert report["latency_ms"]["fast"] > 0 and report["latency_ms"]["generation"] > 0
    assert set(report["throughput_images_per_s"]) == {"batch_1", "batch_8"}
    assert all(v > 0 for v in report["throughput_images_per_s"].values())
    assert set(report["stages_ms"]) == {"preprocess", "semantic_encoder", "pixel_encoder", "spam", "llm", "agmd",
                                        "postprocess"}
    assert all(v > 0 for v in report["stages_ms"].values())
    assert 0 <= report["generation"]["answer_reproduced_fraction"] <= 1 and report["llm_stage_speedup"] > 0
