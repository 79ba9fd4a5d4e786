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
    # every figure is computed as the README defines it, from the same run
    assert report["latency_ms"]["fast"] == report["end_to_end_ms"]
    assert report["stages_sum_ms"] == pytest.approx(sum(report["stages_ms"].values()))
    assert report["overhead_ratio"] == pytest.approx(report["end_to_end_ms"] / report["stages_sum_ms"])
    assert report["fast_vs_generation_speedup"] == pytest.approx(
        report["latency_ms"]["generation"] / report["latency_ms"]["fast"])
    assert report["llm_stage_speedup"] == pytest.approx(
        report["generation_stages_ms"]["llm"] / report["stages_ms"]["llm"])
    assert "benchmarked" in res.output  # the progress bar's last state


def test_bench_reports_progress_for_every_timed_call(checkpoint):
    from agvas.infer import Segmenter
    from agvas.infer.bench import benchmark_calls, run_benchmark, synthetic_images

    phases: list[str] = []
    run_benchmark(Segmenter.from_pretrained(checkpoint, device="cpu"), synthetic_images(2, (32, 32)), repeats=1,
                  progress=phases.append)
    assert len(phases) == benchmark_calls(2, repeats=1)
    assert list(dict.fromkeys(phases)) == ["warm-up", "fast path", "generation path", "throughput, batch 1",
                                           "throughput, batch 2"]


# ---------------------------------------------------------------- hostile files and careless operators (issue 12)


def _segment(checkpoint, *args) -> object:
    return runner.invoke(app, ["segment", *map(str, args), "--checkpoint", str(checkpoint), "--device", "cpu"])


def test_a_decompression_bomb_costs_only_itself(checkpoint, tmp_path):
    from hostile_files import bomb_png

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(random_images()[0]).save(folder / "a_good.png")
    bomb_png(folder / "b_bomb.png")
    Image.fromarray(random_images()[0]).save(folder / "c_good.png")
    res = _segment(checkpoint, folder, "--out", tmp_path / "out", "--batch-size", "4")
    assert res.exit_code == 1, res.output
    assert "b_bomb.png" in res.output and "too large" in res.output and "Traceback" not in res.output
    assert sorted(Path(r["path"]).name for r in _records(tmp_path / "out")) == ["a_good.png", "c_good.png"]


def test_max_pixels_refuses_from_the_header(checkpoint, tmp_path):
    from hostile_files import png_claiming

    big = png_claiming(tmp_path / "big.png", 12000, 12000)
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 30)).save(small)
    res = _segment(checkpoint, big, small, "--out", tmp_path / "out")
    assert res.exit_code == 1 and "12000x12000 = 144,000,000 pixels" in res.output and "--max-pixels" in res.output
    res = _segment(checkpoint, small, "--out", tmp_path / "out2", "--max-pixels", "1000")
    assert res.exit_code == 1 and "40x30 = 1,200 pixels" in res.output
    assert not (tmp_path / "out2" / "small_mask.png").exists()


def test_records_are_appended_as_images_finish(checkpoint, inputs, tmp_path, monkeypatch):
    import agvas.cli.segment as segment_cli

    out = tmp_path / "out"
    saved = []
    real_save = segment_cli._save

    on_disk_when_killed = []

    def save_then_die(*args, **kwargs):
        if len(saved) == 2:  # the run is killed part-way: what is on disk now is all a SIGKILL leaves
            on_disk_when_killed.extend(_records(out))
            raise RuntimeError("killed")
        saved.append(real_save(*args, **kwargs))
        return saved[-1]

    monkeypatch.setattr(segment_cli, "_save", save_then_die)
    _segment(checkpoint, inputs / "rgb.png", inputs / "grey.jpg", inputs / "tall.bmp", "--out", out,
             "--batch-size", "1")
    assert [Path(r["path"]).name for r in on_disk_when_killed] == ["rgb.png", "grey.jpg"]
    monkeypatch.undo()

    mtime = (out / "rgb_mask.png").stat().st_mtime_ns
    res = _segment(checkpoint, inputs / "rgb.png", inputs / "grey.jpg", inputs / "tall.bmp", "--out", out)
    assert res.exit_code == 0, res.output
    assert "2 already done" in res.output and "--overwrite" in res.output
    assert (out / "rgb_mask.png").stat().st_mtime_ns == mtime  # not redone
    assert [Path(r["path"]).name for r in _records(out)] == ["rgb.png", "grey.jpg", "tall.bmp"]
    res = _segment(checkpoint, inputs / "rgb.png", "--out", out, "--overwrite")
    assert res.exit_code == 0 and (out / "rgb_mask.png").stat().st_mtime_ns != mtime
    assert len(_records(out)) == 3  # merged by path: no duplicate line
    record = _records(out)[0]
    assert {k: record[k] for k in ("checkpoint", "cpu_int8", "instruction")} == {
        "checkpoint": str(checkpoint), "cpu_int8": False, "instruction": None}
    # a result of another run is not "done": a new instruction (or checkpoint, --cpu-int8) redoes it
    res = _segment(checkpoint, inputs / "rgb.png", "--out", out, "--instruction", "Where is the defect?")
    assert res.exit_code == 0 and "already done" not in res.output
    assert _records(out)[0]["instruction"] == "Where is the defect?"


def test_a_second_run_into_the_same_out_refuses(checkpoint, inputs, tmp_path):
    from agvas.data.folder_lock import folder_lock

    out = tmp_path / "out"
    with folder_lock(out):
        res = _segment(checkpoint, inputs / "rgb.png", "--out", out)
    text = " ".join(res.output.split())  # rich wraps long lines
    assert res.exit_code == 2 and "is in use by pid" in text and "choose another --out" in text
    assert not (out / "results.jsonl").exists()
    res = _segment(checkpoint, inputs / "rgb.png", "--out", out)  # released: the next run goes ahead
    assert res.exit_code == 0, res.output
    assert not (out / ".agvas.lock").exists()


def test_careless_inputs_are_named(checkpoint, inputs, tmp_path):
    (inputs / "y.png").mkdir()
    res = _segment(checkpoint, inputs / "rgb.png", inputs / "missing.png", inputs / "broken.png",
                   "--out", tmp_path / "out")
    assert res.exit_code == 1 and "3/3" in res.output  # every path given is counted, not only the readable
    res = _segment(checkpoint, inputs, "--out", tmp_path / "out2")
    assert res.output.count("y.png") == 1 and "is a folder" in res.output
    (tmp_path / "file").write_text("x")
    res = _segment(checkpoint, inputs / "rgb.png", "--out", tmp_path / "file")
    assert res.exit_code == 2 and "not a folder" in res.output and "Traceback" not in res.output
    res = _segment(checkpoint, inputs / "rgb.png", "--mode", "describe-plus")
    assert res.exit_code == 2 and "--expectation" in res.output and "expectation=" not in res.output


def test_chat_refuses_an_image_over_max_pixels(checkpoint, tmp_path):
    from hostile_files import bomb_png

    res = runner.invoke(app, ["chat", str(bomb_png(tmp_path / "bomb.png")), "--checkpoint", str(checkpoint),
                              "--device", "cpu"], input="hi\n")
    assert res.exit_code == 1 and "too large" in res.output and "Traceback" not in res.output
    image = tmp_path / "img.png"
    Image.new("RGB", (40, 30)).save(image)
    res = runner.invoke(app, ["chat", str(image), "--checkpoint", str(checkpoint), "--device", "cpu",
                              "--max-pixels", "1000"], input="hi\n")
    assert res.exit_code == 1 and "40x30 = 1,200 pixels" in res.output


def test_help_loads_neither_torch_nor_transformers():
    """`agvas --help` and `agvas data prepare --help` took 8-11 s loading torch for every command (item 15)."""
    import subprocess
    import sys

    code = ("import sys; from typer.testing import CliRunner; from agvas.cli import app; "
            "r = CliRunner(); assert r.invoke(app, ['--help']).exit_code == 0; "
            "assert r.invoke(app, ['data', 'prepare', '--help']).exit_code == 0; "
            "print(sorted(m for m in ('torch', 'transformers', 'accelerate', 'peft') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_help_shows_no_odd_type_labels():
    for args in (["--help"], ["train", "--help"], ["segment", "--help"], ["eval", "--help"]):
        res = runner.invoke(app, args, env={"COLUMNS": "200"})
        assert res.exit_code == 0, res.output
        assert "<bool>" not in res.output and "list[" not in res.output, (args, res.output)


# ---- sharded over processes ---------------------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_two(*args: str) -> None:
    """Two CPU processes through accelerate's torchrun-based launcher (`--cpu` would start one)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true",
           "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "--main_process_port", str(_free_port()), "-m", "agvas.cli", "segment", *args],
        env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def five_images(tmp_path) -> Path:
    folder = tmp_path / "five"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(3)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (40, 48 + 8 * i, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / "sub" / "img0.png")  # same stem
    return folder


def test_two_processes_write_what_one_writes_and_a_killed_shard_resumes(checkpoint, five_images, tmp_path):
    inputs = [str(five_images / "img*.png"), str(five_images / "sub")]
    common = ["--checkpoint", str(checkpoint), "--batch-size", "1"]
    one, two = tmp_path / "one", tmp_path / "two"
    res = runner.invoke(app, ["segment", *inputs, *common, "--out", str(one), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    _launch_two(*inputs, *common, "--out", str(two))
    assert (two / "results.jsonl").read_text() == (one / "results.jsonl").read_text()
    assert not list(two.glob("results.rank-*")) and not list(two.glob(".agvas*.lock"))
    for record in _records(one):  # the same names, and the same pictures
        for key in ("mask", "heat", "overlay"):
            assert (two / record[key]).read_bytes() == (one / record[key]).read_bytes()

    # a killed sharded run: rank 1 finished one of its images, rank 0 none; the rerun does only the rest
    records = _records(two)
    (two / "results.jsonl").unlink()
    kept = records[1]  # input 1 belongs to rank 1
    (two / "results.rank-001-of-002.jsonl").write_text(json.dumps(kept) + "\n")
    for record in records:
        if record is not kept:
            for key in ("mask", "heat", "overlay"):
                (two / record[key]).unlink()
    stamp = (two / kept["mask"]).stat().st_mtime_ns
    _launch_two(*inputs, *common, "--out", str(two))
    assert (two / "results.jsonl").read_text() == (one / "results.jsonl").read_text()
    assert (two / kept["mask"]).stat().st_mtime_ns == stamp  # not redone


def test_one_process_folds_in_the_shards_of_a_killed_sharded_run(checkpoint, five_images, tmp_path):
    out = tmp_path / "out"
    args = ["segment", str(five_images / "img*.png"), "--checkpoint", str(checkpoint), "--out", str(out),
            "--device", "cpu", "--batch-size", "1"]
    assert runner.invoke(app, args).exit_code == 0
    records = _records(out)
    (out / "results.jsonl").write_text(json.dumps(records[0]) + "\n")
    (out / "results.rank-001-of-002.jsonl").write_text(json.dumps(records[3]) + "\n" + '{"path": "half')
    for record in records[1:3]:
        (out / record["mask"]).unlink()
    stamps = {r["path"]: (out / r["mask"]).stat().st_mtime_ns for r in (records[0], records[3])}
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "2 already done" in res.output, res.output
    assert not list(out.glob("results.rank-*"))
    by_path = {r["path"]: r for r in records}  # every record back, the redone ones equal to the first run's
    assert {r["path"]: r for r in _records(out)} == by_path and len(_records(out)) == len(records)
    assert all((out / r["mask"]).stat().st_mtime_ns == stamps[r["path"]] for r in (records[0], records[3]))


def test_calibrate_chooses_a_rule_on_good_images_and_reports_a_broken_one(checkpoint, inputs, tmp_path):
    out = tmp_path / "rule.json"
    defective = tmp_path / "bad.png"
    Image.fromarray(random_images()[0]).save(defective)
    res = runner.invoke(app, ["calibrate", str(inputs), "--defective", str(defective), "--checkpoint",
                              str(checkpoint), "--false-alarm", "0.0", "--holdout", "0.3", "--device", "cpu",
                              "--out", str(out)])
    assert res.exit_code == 1, res.output  # the broken file, reported after the others were used
    assert "broken.png" in res.output and "--threshold 0.5 --min-area" in res.output
    report = json.loads(out.read_text())
    assert report["rule"] == "min-area" and report["calibration"]["images"] == 2
    assert report["holdout"]["images"] == 1 and report["defective"]["images"] == 1
    assert report["calibration"]["chosen"] == 0.0  # --false-alarm 0: every calibration image cleared
    assert any("broken.png" in f for f in report["failed"])
    usage = runner.invoke(app, ["calibrate", str(inputs), "--rule", "area", "--checkpoint", str(checkpoint)])
    assert usage.exit_code == 2 and "--rule must be one of" in usage.output
    empty = tmp_path / "empty"
    empty.mkdir()
    none = runner.invoke(app, ["calibrate", str(empty), "--checkpoint", str(checkpoint), "--device", "cpu"])
    assert none.exit_code == 1 and "no good images" in none.output
