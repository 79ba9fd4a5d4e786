"""`agvas eval`: the runner's metrics equal a direct computation, reports are well-formed, sharding changes
nothing, bad images are skipped and reported, runs compare side by side."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import precision_recall_curve
from typer.testing import CliRunner

from agvas.cli import app
from agvas.data.meta import Entry, load_meta, load_sample, write_meta
from agvas.evaluate.baselines import median_deviation
from agvas.evaluate.methods import MedianDeviationMethod, Prediction, build_method
from agvas.evaluate.metrics import IMAGE_METRIC_KEYS, ORACLE_METRIC_KEYS, TEXT_KEYS, CategoryAccumulator, smooth
from agvas.evaluate.report import format_value, metrics_document, metrics_markdown, read_metrics, write_json
from agvas.evaluate.runner import EvalSettings, GalleryPicker, run_evaluation
from agvas.io import save_mask_png, save_png
from agvas.verdict import text_verdict

SIZE = 64
CATEGORIES = {"alpha": (2, 3), "beta": (2, 2)}  # (normal, anomalous) images
REPORT_FILES = ("metrics.json", "metrics.md", "pr_curves.png", "gallery.png", "false_alarms.png")


def make_dataset(root: Path, seed: int = 0) -> Path:
    """Textured surfaces; anomalous ones carry a dark blob or scratch (the GT), normal ones nothing."""
    rng = np.random.default_rng(seed)
    test: dict[str, list[Entry]] = {}
    for cls, (n_normal, n_anomalous) in CATEGORIES.items():
        entries = []
        for k in range(n_normal + n_anomalous):
            base = rng.normal(150, 12, (SIZE, SIZE, 1)) + rng.normal(0, 4, (SIZE, SIZE, 3))
            mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
            if k >= n_normal:
                y, x = rng.integers(8, SIZE - 16, 2)
                h, w = rng.integers(3, 10, 2)
                mask[y:y + h, x:x + w] = 1
                base[mask > 0] -= 70
            image = base.clip(0, 255).astype(np.uint8)
            name = f"{cls}/{'bad' if mask.any() else 'good'}_{k}.png"
            save_png(root / name, image)
            mask_path = ""
            if mask.any():
                mask_path = f"{cls}/gt_{k}.png"
                save_mask_png(root / mask_path, mask)
            entries.append(Entry(name, mask_path, cls, "bad" if mask.any() else "good", int(mask.any())))
        test[cls] = entries
    write_meta(root, test)
    return root


def cli(*args: str, code: int = 0):
    result = CliRunner().invoke(app, ["eval", *args])
    assert result.exit_code == code, (result.output, result.exception)
    return result


def without_run(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "run"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("eval-data"))


@pytest.fixture(scope="module")
def reference_run(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "median"
    cli("--data", str(dataset), "--method", "median-deviation", "--out", str(out))
    return out


def direct_metrics(root: Path, image_size: int | None = None) -> dict[str, dict]:
    accs: dict[str, CategoryAccumulator] = {}
    for cls, entries in load_meta(root).items():
        acc = accs[cls] = CategoryAccumulator()
        for entry in entries:
            sample = load_sample(root, entry)
            image, gt = sample.image, sample.mask
            if image_size:
                image = np.asarray(Image.fromarray(image).resize((image_size,) * 2, Image.Resampling.BICUBIC))
                gt = np.asarray(Image.fromarray(gt).resize((image_size,) * 2, Image.Resampling.NEAREST))
            amap, mask = median_deviation(image)
            acc.add(amap, gt, mask)
    return {cls: acc.summarise() for cls, acc in accs.items()}


def same(a: float | None, b: float | None) -> bool:
    """Equal, NaN equal to NaN (undefined metrics), None to None (counts of a figure that was not measured)."""
    return a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))


# ---------------------------------------------------------------------------------------- accumulator additions
def test_merging_per_image_accumulators_is_exact_and_pr_curve_matches_sklearn():
    rng = np.random.default_rng(3)
    whole = CategoryAccumulator(sigma=1.0)
    merged = CategoryAccumulator(sigma=1.0)
    scores, labels = [], []
    for k in range(5):
        score = rng.random((24, 24)).round(2)  # ties on purpose
        gt = np.zeros((24, 24), dtype=np.uint8)
        if k % 2:
            gt[5:12, 6:14] = 1
            gt[18:20, 2:4] = 1
            score[gt > 0] += 0.3
        whole.add(score, gt)
        one = CategoryAccumulator(sigma=1.0)
        one.add(score, gt)
        merged.merge(one)
        assert one.n_images == 0 and one.nbytes == 0
        scores.append(smooth(score, 1.0).astype(np.float32).ravel())
        labels.append(gt.ravel())
    a, b = whole.summarise(), merged.summarise()
    assert a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    with pytest.raises(ValueError):
        merged.merge(CategoryAccumulator(sigma=0.0))

    precision, recall, thresholds = merged.pr_curve()
    assert np.all(np.diff(thresholds) < 0) and recall[-1] == 1.0
    ap = float(np.sum(np.diff(recall, prepend=0.0) * precision))
    assert ap * 100 == pytest.approx(b["ap"], abs=1e-9)
    f1 = np.max(2 * precision * recall / (precision + recall))
    assert f1 * 100 == pytest.approx(b["f1_max"], abs=1e-9)
    sk_p, sk_r, sk_t = precision_recall_curve(np.concatenate(labels), np.concatenate(scores))
    at = {float(t): (p, r) for p, r, t in zip(sk_p, sk_r, sk_t, strict=False)}
    for p, r, t in zip(precision, recall, thresholds, strict=True):
        assert at[float(t)] == pytest.approx((p, r), abs=1e-12)
    empty = CategoryAccumulator()
    empty.add(np.zeros((4, 4)), np.zeros((4, 4)))
    assert all(x.size == 0 for x in empty.pr_curve())


def test_gallery_picker_ignores_arrival_order():
    ious = [0.5, 0.9, 0.1, 0.9, 0.3, 0.7, 0.0]
    one = GalleryPicker(2)
    for i, v in enumerate(ious):
        one.offer(i, True, v, np.full((2, 2), i % 2, dtype=bool))
    a, b = GalleryPicker(2), GalleryPicker(2)
    for i, v in enumerate(ious):
        (a if i % 2 else b).offer(i, True, v, np.full((2, 2), i % 2, dtype=bool))
    two = GalleryPicker(2)
    two.absorb(b)
    two.absorb(a)
    assert one.selection() == two.selection() == [("best", 1, 0.9), ("best", 3, 0.9), ("worst", 6, 0.0),
                                                   ("worst", 2, 0.1)]
    assert set(one.masks) == set(two.masks) == {1, 2, 3, 6}


# ---------------------------------------------------------------------------------------- runner and CLI
def test_median_deviation_through_the_runner_equals_direct_computation(dataset, tmp_path):
    result = run_evaluation(MedianDeviationMethod(), dataset, EvalSettings(batch_size=3), tmp_path)
    direct = direct_metrics(dataset)
    assert list(result.categories) == list(direct) == ["alpha", "beta"]
    for cls, expected in direct.items():
        got = result.categories[cls]
        assert got.keys() == expected.keys()
        assert all(same(got[k], expected[k]) for k in expected), cls
    assert result.failed == [] and result.n_evaluated == 9
    mean = np.mean([direct[c]["ap"] for c in direct])
    assert result.mean["ap"] == pytest.approx(mean, abs=1e-12)
    with pytest.raises(ValueError, match="no --checkpoint"):
        build_method("median-deviation", checkpoint="x")


def test_agvas_checkpoint_run_writes_a_well_formed_report(dataset, tiny_backbones, tmp_path, reference_run):
    from model_fixtures import build

    from agvas.model.config import preset_config

    ckpt = build(preset_config("tiny"), tiny_backbones).save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "agvas-run"
    cli("--data", str(dataset), "--checkpoint", str(ckpt), "--batch-size", "4", "--out", str(out))
    for name in REPORT_FILES:
        assert (out / name).is_file(), name
    raw = json.loads((out / "metrics.json").read_text())  # strict JSON: undefined metrics are null
    assert raw["method"]["name"] == "agvas" and raw["method"]["mode"] == "direct"
    assert raw["method"]["checkpoint"] == str(ckpt)
    assert raw["counts"] == {"listed": 9, "evaluated": 9, "failed": 0, "anomalous": 5, "normal": 4, "categories": 2}
    assert raw["protocol"]["image_size"] is None and raw["protocol"]["sigma"] == 0.0 and raw["failed"] == []
    assert {"seconds", "processes", "images_per_second"} <= raw["run"].keys()
    assert raw["protocol"]["threshold"] == 0.5
    for res in [raw["mean"], *raw["categories"].values()]:
        for key in ("ap", "f1_max", "auroc", "aupro", "iou_ano", "iou_nor", *ORACLE_METRIC_KEYS, *IMAGE_METRIC_KEYS):
            assert res[key] is None or 0.0 <= res[key] <= 100.0, (key, res[key])
        # direct mode's answer is a fixed teacher-forced string: no text-mask agreement
        assert res["text_mask_agreement"] is None and res["n_text_undecidable"] is None and res["n_text"] == 0
    assert raw["categories"]["alpha"]["n_images"] == 5
    md = (out / "metrics.md").read_text()
    assert "| Category | AP | F1-max | IoU_ano | IoU_nor | P-AUROC | AUPRO | Images (ano / nor) |" in md
    assert "| alpha |" in md and "| beta |" in md and "**Mean (2)**" in md
    alpha = raw["categories"]["alpha"]
    assert f"| {format_value(alpha['auroc'])} | {format_value(alpha['aupro'])} | " in md.split("| alpha |")[1]
    assert "Table 1 form (AP, F1-Max, IoU_ano)" in md
    assert "| Category | I-AUROC | I-AP | I-F1-max | False alarm | Miss |" in md and "Text–mask" not in md
    with Image.open(out / "pr_curves.png") as im:
        assert im.size == (900, 600) and im.mode == "RGB"
    with Image.open(out / "gallery.png") as im:
        assert im.mode == "RGB" and im.width > 3 * 64 and im.height > 4 * 64

    # (c) side by side with the training-free reference
    cmp_out = tmp_path / "cmp"
    res = cli("--compare", str(out), str(reference_run), "--out", str(cmp_out))
    comp = json.loads((cmp_out / "comparison.json").read_text())
    assert [r["run"] for r in comp["runs"]] == ["agvas-run", "median"] and comp["notes"] == []
    reference = read_metrics(reference_run)
    assert comp["runs"][1]["ap"] == pytest.approx(reference["mean"]["ap"])
    md = (cmp_out / "comparison.md").read_text()
    assert ("| Run | Method | Dataset | AP | F1-max | IoU_ano | IoU_nor | Oracle IoU_ano | Oracle IoU_nor | I-AUROC "
            "| I-AP | I-F1-max | False alarm | Miss | Text–mask |") in md
    assert comp["runs"][1]["iou_ano_oracle"] == pytest.approx(reference["mean"]["iou_ano_oracle"])
    assert comp["runs"][1]["image_auroc"] == pytest.approx(reference["mean"]["image_auroc"])
    assert f"| agvas-run | agvas {raw['method']['variant']} (direct) |" in md and "| median | median-deviation |" in md
    assert "agvas-run" in res.output
    cli("--compare", str(tmp_path / "nowhere"), code=2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_write_the_same_report_as_one(dataset, reference_run, tmp_path):
    """`accelerate launch --cpu` starts ONE process whatever --num_processes says (its simple launcher; several
    CPU processes need mpirun), so two CPU workers come from the torchrun-based --multi_gpu launcher with
    ACCELERATE_USE_CPU set: gloo on the CPU, and the same launch path as several GPUs."""
    out = tmp_path / "sharded"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true",
           "CUDA_VISIBLE_DEVICES": ""}
    launch = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "--main_process_port", str(_free_port()), "-m", "agvas.cli", "eval", "--data", str(dataset),
         "--method", "median-deviation", "--batch-size", "2", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert launch.returncode == 0, launch.stdout + launch.stderr
    one = json.loads((reference_run / "metrics.json").read_text())
    two = json.loads((out / "metrics.json").read_text())
    assert two["run"]["processes"] == 2 and one["run"]["processes"] == 1
    assert without_run(two) == without_run(one)
    for name in ("pr_curves.png", "gallery.png", "false_alarms.png"):  # same curves, images, masks, false alarms
        assert (out / name).read_bytes() == (reference_run / name).read_bytes(), name
    assert not (out / ".eval-shards").exists()


def test_a_corrupt_image_is_reported_and_skipped(dataset, tmp_path):
    root = make_dataset(tmp_path / "data")
    broken = root / load_meta(root)["beta"][3].img_path
    broken.write_bytes(b"this is not a png")
    out = tmp_path / "out"
    result = cli("--data", str(root), "--method", "median-deviation", "--out", str(out), code=1)
    assert "failed" in result.output
    doc = read_metrics(out)
    assert [f["path"] for f in doc["failed"]] == [str(broken.relative_to(root))]
    assert "cannot read image" in doc["failed"][0]["error"]
    assert doc["counts"]["evaluated"] == 8 and doc["counts"]["failed"] == 1
    assert doc["categories"]["beta"]["n_images"] == 3
    assert "Failed images (1)" in (out / "metrics.md").read_text()
    for name in REPORT_FILES:
        assert (out / name).is_file()


def test_image_size_resizes_images_and_masks_before_evaluation(dataset, tmp_path):
    out = tmp_path / "resized"
    cli("--data", str(dataset), "--method", "median-deviation", "--image-size", "40", "--limit", "4",
        "--out", str(out))
    doc = read_metrics(out)
    assert doc["protocol"]["image_size"] == 40 and doc["protocol"]["limit"] == 4
    assert doc["counts"]["listed"] == 8  # alpha: 4 of 5 (evenly spread), beta: all 4
    full = direct_metrics(dataset, image_size=40)
    assert same(doc["categories"]["beta"]["ap"], full["beta"]["ap"])
    assert same(doc["categories"]["beta"]["iou_ano"], full["beta"]["iou_ano"])
    assert doc["categories"]["beta"]["ap"] != direct_metrics(dataset)["beta"]["ap"]  # the size changed what is scored
    with Image.open(out / "gallery.png") as im:
        assert im.height > 0


class TalkingMethod(MedianDeviationMethod):
    """The reference with a generated answer per image, cycling through normal, anomalous and undecidable
    phrasings, so every kind of verdict meets both kinds of mask; it remembers what it said."""

    ANSWERS = ("There is no anomaly to segment; the mask is empty.",
               "There is a small crack in the top part of the surface, as indicated by [NOR][ANO][SEG].",
               "Sure, it is [NOR][ANO][SEG].",
               "The surface looks normal, without any defect; therefore no region is marked as anomalous.")

    def __init__(self, empty_every: int = 3) -> None:
        super().__init__()
        self.said: list[tuple[str, bool]] = []
        self.empty_every = empty_every

    def predict(self, images):
        out = []
        for pred in super().predict(images):
            k = len(self.said)
            mask = pred.mask & (k % self.empty_every != 0)  # some empty masks, so both verdicts occur
            text = self.ANSWERS[k % len(self.ANSWERS)]
            self.said.append((text, bool(mask.any())))
            out.append(Prediction(pred.probability, mask, text))
        return out


def test_text_mask_agreement_in_metrics_json_and_md(dataset, tmp_path):
    method = TalkingMethod()
    settings = EvalSettings(batch_size=4)
    result = run_evaluation(method, dataset, settings, tmp_path)
    assert len(method.said) == len(result.entries) == 9  # one process, batches in listing order
    expected: dict[str, list[bool]] = {}
    undecidable: dict[str, int] = {}
    for index, entry in enumerate(result.entries):
        text, flagged = method.said[index]
        verdict = text_verdict(text)
        if verdict is None:
            undecidable[entry.cls_name] = undecidable.get(entry.cls_name, 0) + 1
        else:
            expected.setdefault(entry.cls_name, []).append(verdict == ("anomalous" if flagged else "normal"))
    for cls, agree in expected.items():
        got = result.categories[cls]
        assert got["text_mask_agreement"] == pytest.approx(100 * np.mean(agree))
        assert got["n_text_undecidable"] == undecidable.get(cls, 0) and got["n_text"] == len(agree) + got[
            "n_text_undecidable"]
    pooled = [a for agree in expected.values() for a in agree]
    assert result.mean["text_mask_agreement"] == pytest.approx(100 * np.mean(pooled))
    assert result.mean["n_text_undecidable"] == sum(undecidable.values()) > 0

    doc = metrics_document(result, method.describe(), settings, dataset)
    write_json(tmp_path / "metrics.json", doc)
    raw = json.loads((tmp_path / "metrics.json").read_text())
    assert set(TEXT_KEYS) <= raw["mean"].keys() and raw["protocol"]["threshold"] == 0.5
    assert raw["protocol"]["text_mask_agreement"] == "pooled over images"
    md = metrics_markdown(doc)
    assert "| Category | I-AUROC | I-AP | I-F1-max | False alarm | Miss | Text–mask | Undecidable |" in md
    alpha = next(line for line in md.split("## Image level")[1].splitlines() if line.startswith("| alpha |"))
    agreement = result.categories["alpha"]["text_mask_agreement"]
    assert f" {agreement:.1f} | {undecidable.get('alpha', 0)} / 5 |" in alpha
    assert "the Mean row pools all images" in md


def test_compare_reads_runs_without_the_image_level_keys(reference_run, tmp_path):
    """metrics.json files written before the oracle, image-level and text metrics existed still compare: '–'."""
    old = json.loads((reference_run / "metrics.json").read_text())
    dropped = {*ORACLE_METRIC_KEYS, "oracle_threshold", *IMAGE_METRIC_KEYS, *TEXT_KEYS}
    for res in [old["mean"], *old["categories"].values()]:
        for key in dropped:
            res.pop(key, None)  # the mean has no oracle_threshold
    old["mean"]["skipped"] = {k: v for k, v in old["mean"]["skipped"].items() if k not in dropped}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "metrics.json").write_text(json.dumps(old))
    cli("--compare", str(tmp_path / "old"), str(reference_run), "--out", str(tmp_path / "cmp"))
    rows = [line for line in (tmp_path / "cmp" / "comparison.md").read_text().splitlines()
            if line.startswith(("| old ", "| median "))]
    old_row, new_row = (row.split(" | ") for row in rows)
    assert old_row[3:7] == new_row[3:7]  # the same pixel figures
    assert all(cell.strip(" |") == "–" for cell in old_row[7:])  # oracle, image-level, text columns: not recorded
    assert new_row[7].strip() != "–" and new_row[9].strip() != "–"  # oracle IoU_ano, I-AUROC of the current run
    comp = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert comp["runs"][0]["image_auroc"] is None


def test_oracle_ious_in_metrics_json_and_md(reference_run, tmp_path):
    """Per category and in the mean, in their own table headed as chosen on the data; null reads back as NaN."""
    raw = json.loads((reference_run / "metrics.json").read_text())
    md = (reference_run / "metrics.md").read_text()
    oracle = md.split("## At the oracle threshold (chosen on this data: not an operating point)")[1]
    oracle = oracle.split("## Image level")[0]
    assert "| Category | Threshold | IoU_ano | IoU_nor |" in oracle and "not what a deployed model" in oracle
    for name, res in raw["categories"].items():
        assert isinstance(res["oracle_threshold"], float)
        row = f"| {name} | {res['oracle_threshold']:.4g} | {format_value(res['iou_ano_oracle'])} | "
        assert row + f"{format_value(res['iou_nor_oracle'])} |" in oracle
    cats = raw["categories"].values()
    for key in ORACLE_METRIC_KEYS:
        assert raw["mean"][key] == pytest.approx(np.mean([res[key] for res in cats]))
    assert "oracle_threshold" not in raw["mean"]
    assert raw["protocol"]["threshold"] == 0.5  # the fixed threshold of the masks stays on record
    raw["categories"]["alpha"]["iou_nor_oracle"] = raw["categories"]["alpha"]["oracle_threshold"] = None
    (tmp_path / "metrics.json").write_text(json.dumps(raw))
    doc = read_metrics(tmp_path)
    assert math.isnan(doc["categories"]["alpha"]["iou_nor_oracle"])
    assert math.isnan(doc["categories"]["alpha"]["oracle_threshold"])
    assert "| alpha | – | " in metrics_markdown(doc)


# ---------------------------------------------------------------- hostile files and careless operators (issue 12)


def _flat(result) -> str:
    return " ".join(result.output.split())  # rich wraps long lines


def test_a_decompression_bomb_is_skipped_and_the_rest_evaluated(tmp_path):
    from hostile_files import bomb_png

    root = make_dataset(tmp_path / "data")
    bomb = bomb_png(root / load_meta(root)["alpha"][0].img_path)
    out = tmp_path / "out"
    result = cli("--data", str(root), "--method", "median-deviation", "--out", str(out), code=1)
    assert "Traceback" not in result.output
    doc = read_metrics(out)
    assert [f["path"] for f in doc["failed"]] == [str(bomb.relative_to(root))]
    assert "too large" in doc["failed"][0]["error"] and doc["counts"]["evaluated"] == 8


def test_max_pixels_skips_larger_images_from_their_header(tmp_path):
    root = make_dataset(tmp_path / "data")
    out = tmp_path / "out"
    cli("--data", str(root), "--method", "median-deviation", "--out", str(out), "--max-pixels", "100", code=1)
    doc = read_metrics(out)
    assert len(doc["failed"]) == 9 and f"{SIZE}x{SIZE} = {SIZE * SIZE:,} pixels" in doc["failed"][0]["error"]


def _meta_with_paths(root: Path, img_path: str) -> None:
    doc = json.loads((root / "meta.json").read_text())
    doc["test"]["alpha"][0]["img_path"] = img_path
    (root / "meta.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("outside", ["absolute", "../outside.png"])
def test_paths_outside_the_root_are_refused_unless_allowed(tmp_path, outside):
    root = make_dataset(tmp_path / "data")
    target = tmp_path / "outside.png"
    save_png(target, np.full((SIZE, SIZE, 3), 128, np.uint8))
    _meta_with_paths(root, str(target) if outside == "absolute" else outside)
    result = cli("--data", str(root), "--method", "median-deviation", "--out", str(tmp_path / "out"), code=2)
    text = _flat(result)
    assert "test/alpha[0]" in text and "outside the dataset root" in text and "--allow-outside-root" in text
    assert not (tmp_path / "out" / "metrics.json").exists()
    cli("--data", str(root), "--method", "median-deviation", "--out", str(tmp_path / "out"),
        "--allow-outside-root")


@pytest.mark.parametrize("test_split", [None, {}, {"alpha": []}])
def test_no_test_images_is_a_usage_error(tmp_path, test_split):
    root = tmp_path / "data"
    root.mkdir()
    doc = {"train": {}} if test_split is None else {"train": {}, "test": test_split}
    (root / "meta.json").write_text(json.dumps(doc))
    result = cli("--data", str(root), "--method", "median-deviation", "--out", str(tmp_path / "out"), code=2)
    assert "lists no images" in _flat(result) and "'test'" in _flat(result)


def test_a_second_run_into_the_same_out_refuses(dataset, tmp_path):
    from agvas.data.folder_lock import folder_lock

    out = tmp_path / "out"
    with folder_lock(out):
        result = cli("--data", str(dataset), "--method", "median-deviation", "--out", str(out), code=2)
    assert "is in use by pid" in _flat(result) and not (out / "metrics.json").exists()


def test_careless_options_are_named(dataset, tmp_path):
    (tmp_path / "file").write_text("x")
    result = cli("--data", str(dataset), "--method", "median-deviation", "--out", str(tmp_path / "file"), code=2)
    assert "not a folder" in _flat(result)
    result = cli("--data", str(dataset), "--mode", "describe-plus", "--out", str(tmp_path / "o"), code=2)
    assert "--expectation" in _flat(result) and "expectation=" not in _flat(result)
