"""Readers of the paper's training sources, each on a small tree in its published layout, the mixture
wiring (`data.sources`) and the pre-flight check (`agvas data check`)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import source_trees as trees
import yaml

from agvas.anchors import ANCHOR_TOKENS, IMAGE_PLACEHOLDER, anchor_string
from agvas.data.mixture import _finalise
from agvas.data.recipe import build_training_set
from agvas.data.sources import anomaly
from agvas.data.sources.base import EntryPool, reset_skip_counts, skip_counts
from agvas.data.sources.coco import decode_rle, rle_string_counts, segmentation_mask
from agvas.data.sources.refer import load_pickled_data
from agvas.data.sources.registry import KINDS, parse_sources
from agvas.io import DataError
from agvas.train.config import DataSection, load_train_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trees.build_all(tmp_path_factory.mktemp("sources"))


def paper_config(base: Path, tmp_path: Path, name: str = "llava-ov-7b.yaml") -> Path:
    """The shipped real-preset recipe with its /PATH/TO/ placeholders pointing at the test trees and the
    repo-relative roots (data/visa ...) replaced by nothing, so that only the paper's sources remain."""
    raw = yaml.safe_load((REPO / "configs" / name).read_text().replace("/PATH/TO/", f"{base}/"))
    raw["data"].update(anomaly_datasets=[], camvid=None, validation=[], textures=None, num_workers=0,
                       image_size=64)
    raw.update(steps=10, global_batch=raw["micro_batch"])
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def _pool(kind: str, root: Path) -> EntryPool:
    spec = parse_sources([{"kind": kind, "root": str(root)}])[0]
    pool = spec.build(ANCHOR_TOKENS)
    assert isinstance(pool, EntryPool)
    return pool


@pytest.mark.parametrize("kind,folder,found,index_bad", [
    ("real-iad", "Real-IAD", 7, 1),      # 3 good C1 + 3 defective + 1 truncated; the maskless one is bad
    ("goodsad", "GoodsAD", 8, 1),        # 4 good + 3 defective + 1 truncated; 1 defective without mask
    ("miad", "MIAD", 8, 1),
    ("dtd-synthetic", "DTD-Synthetic", 8, 1),
    ("zju-leaper", "ZJU-Leaper", 6, 1),  # 3 normal + 3 defective with masks; 000006 has none
])
def test_anomaly_readers(base: Path, kind: str, folder: str, found: int, index_bad: int) -> None:
    reset_skip_counts()
    pool = _pool(kind, base / folder)
    assert len(pool) == found and len(pool.problems) == index_bad
    assert pool.anomalous and pool.normal
    rng = np.random.default_rng(0)
    items = [pool.draw(rng, normal_rate=0.5) for _ in range(40)]
    assert any(it.anomalous and it.mask.any() for it in items) and any(not it.anomalous for it in items)
    for it in items:
        assert it.image.dtype == np.uint8 and it.image.shape[2] == 3 and it.mask.shape == it.image.shape[:2]
    if kind != "zju-leaper":  # every tree but ZJU-Leaper holds a truncated image: drawn, skipped, counted
        assert skip_counts()[kind] >= 1
        assert any("cannot read image" in why for why in pool.problems.items.values())


def test_realiad_views_and_classes(base: Path) -> None:
    entries, _ = anomaly.realiad_entries(base / "Real-IAD", views=None)
    assert sum("_C2_" in e.img_path for e in entries) == 3
    entries, _ = anomaly.realiad_entries(base / "Real-IAD", classes=["nothing"])
    assert entries == []
    assert {e.cls_name for e in anomaly.zju_leaper_entries(base / "ZJU-Leaper")[0]} == {"pattern1", "pattern2"}


GENERAL = [
    ("ade20k", "lisa/ade20k", {}, 3, ("wall", "tree")),
    ("cocostuff", "lisa/cocostuff", {}, 4, ("person", "car")),  # pixel p = labels.txt id p+1
    ("mapillary", "lisa/mapillary", {}, 3, ("road", "vegetation")),
    ("paco-lvis", "lisa/vlpart/paco", {}, 4, ("cap", "handle")),
    ("pascal-part", "lisa/vlpart/pascal_part", {}, 4, ("hair", "tail")),
    ("refcoco", "lisa/refer_seg", {}, 3, ("the thing number",)),
    ("refcoco+", "lisa/refer_seg", {}, 3, ("the thing number",)),
    ("refcocog", "lisa/refer_seg", {"split_by": "umd"}, 3, ("the thing number",)),
    ("refclef", "lisa/refer_seg", {}, 3, ("the thing number",)),
    ("reasonseg", "lisa/reason_seg/ReasonSeg", {}, 4, ("hold",)),
]


@pytest.mark.parametrize("kind,folder,extra,found,words", GENERAL)
def test_general_readers(base: Path, kind: str, folder: str, extra: dict, found: int, words: tuple) -> None:
    reset_skip_counts()
    reader = parse_sources([{"kind": kind, "root": str(base / folder), **extra}])[0].build(ANCHOR_TOKENS)
    assert len(reader) == found
    rng = np.random.default_rng(1)
    questions = []
    for _ in range(12):
        s = _finalise(reader.sample(rng), "general", 64)
        assert s["mask"].any() and s["has_mask"]
        assert anchor_string(ANCHOR_TOKENS) in s["conversation"][1]["content"]
        questions.append(s["conversation"][0]["content"])
    assert any(w in q for q in questions for w in words), questions[:3]
    if kind in ("cocostuff", "reasonseg", "paco-lvis"):
        assert reader.problems  # the truncated image / the orphan / the annotation without its image


def test_semantic_classes_never_ignored(base: Path) -> None:
    reader = parse_sources([{"kind": "mapillary", "root": str(base / "lisa/mapillary")}])[0].build(ANCHOR_TOKENS)
    rng = np.random.default_rng(0)
    qs = [reader.sample(rng)["conversation"][0]["content"].lower() for _ in range(20)]
    assert not any("unlabeled" in q for q in qs)


def test_llava_instruct(base: Path) -> None:
    reader = parse_sources([{"kind": "llava-instruct", "root": str(base / "lisa/llava_dataset"),
                             "images": str(base / "lisa/coco/train2017")}])[0].build(ANCHOR_TOKENS)
    assert len(reader) == 4 and len(reader.problems) == 1  # the out-of-turn record
    rng = np.random.default_rng(0)
    for _ in range(8):
        s = _finalise(reader.sample(rng), "vqa", 64)
        conv = s["conversation"]
        first = conv[0]["content"]
        assert first.startswith(f"{IMAGE_PLACEHOLDER}\n") and first.count(IMAGE_PLACEHOLDER) == 1
        assert [t["role"] for t in conv] == ["user", "assistant"] * (len(conv) // 2) and not s["has_mask"]
    assert any("299.jpg" in f for f in reader.problems.items)  # the record whose image is missing was skipped


def test_anomaly_instruct_jsonl(base: Path) -> None:
    spec = parse_sources([{"kind": "anomaly-instruct", "root": str(base / "anomaly-instruct"),
                           "records": str(base / "anomaly-instruct/records.jsonl")}])[0]
    reader = spec.build(ANCHOR_TOKENS)
    assert len(reader.records) == 2 and len(reader.problems) == 2
    assert all(k.endswith((":3", ":4")) for k in reader.problems.items)  # named by file:line
    assert len(reader.anomalous) == 2 and len(reader.normal) == 1  # a2 has no valid record


def test_coco_rle_and_polygons() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        m = (rng.random((23, 31)) < 0.3).astype(np.uint8)
        got = segmentation_mask({"size": [23, 31], "counts": trees.rle_encode(m)}, 23, 31)
        np.testing.assert_array_equal(got, m)
    m = decode_rle([2, 3, 1], 3, 2)  # column-major: first column 0 0 1, second 1 1 0
    np.testing.assert_array_equal(m, [[0, 1], [0, 1], [1, 0]])
    assert segmentation_mask([[0, 0, 9, 0, 9, 9, 0, 9]], 12, 12)[:10, :10].all()
    with pytest.raises(ValueError):
        decode_rle([5], 3, 3)
    assert rle_string_counts("") == []


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/agvas-pwned",))


def test_refs_pickle_is_restricted(tmp_path: Path) -> None:
    good = tmp_path / "good.p"
    good.write_bytes(pickle.dumps([{"a": {1, 2}, "b": ("x", 1.5)}], protocol=2))
    assert load_pickled_data(good) == [{"a": {1, 2}, "b": ("x", 1.5)}]
    evil = tmp_path / "evil.p"
    evil.write_bytes(pickle.dumps([_Evil()], protocol=2))
    with pytest.raises(DataError, match="not allowed"):
        load_pickled_data(evil)
    assert not Path("/tmp/agvas-pwned").exists()


def test_bad_source_entries() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        parse_sources([{"kind": "imagenet", "root": "x"}])
    with pytest.raises(ValueError, match="unknown key"):
        parse_sources([{"kind": "ade20k", "root": "x", "splitt": "training"}])
    with pytest.raises(ValueError, match="second source"):
        parse_sources([{"kind": "ade20k", "root": "x"}, {"kind": "ade20k", "root": "y"}])
    with pytest.raises(DataError, match="not found"):
        parse_sources([{"kind": "refcoco", "root": "/nonexistent"}])[0].build(ANCHOR_TOKENS)


# Pixel sums of the first 16 default samples (these samples reproduce, bit for bit on an AVX2 CPU, the byte
# hash taken before `data.sources` existed; AVX-512 moves sample 7 by 2).
DEFAULT_PIXEL_SUMS = [22265100, 23702126, 18903879, 11489723, 26348555, 19969757, 27382996, 31066016, 29345491,
                      28729386, 22394702, 26348547, 21549386, 14078625, 19873640, 31138351]


def test_default_mixture_unchanged() -> None:
    """The same samples as before `data.sources` existed. Masks and conversations come from the seeded draws
    alone and must match bit for bit; pixels go through numpy's float kernels, whose AVX-512 and AVX2 paths
    round a few values one grey level apart (6 pixels of sample 7), so images are held to their sums."""
    ds = build_training_set(DataSection(), ANCHOR_TOKENS, length=64, seed=3)
    h = hashlib.sha256()
    sums = []
    for i in range(16):
        s = ds[i]
        h.update(s["mask"].tobytes())
        h.update(json.dumps(s["conversation"]).encode())
        sums.append(int(s["image"].astype(np.int64).sum()))
    assert h.hexdigest() == "e0662f34ba604407e1aed5906927dbd198b1c4c705cec640cc9a08488be6f4fc"
    assert all(abs(a - b) <= 64 for a, b in zip(sums, DEFAULT_PIXEL_SUMS, strict=True)), sums


def test_paper_recipes_name_every_source(base: Path, tmp_path: Path) -> None:
    for name in ("llava-ov-7b.yaml", "llava-ov-0.5b.yaml"):
        cfg = load_train_config(REPO / "configs" / name)
        assert {s.kind for s in parse_sources(cfg.data.sources)} == set(KINDS)
        assert all("/PATH/TO/" in str(s["root"]) for s in cfg.data.sources)
    cfg = load_train_config(paper_config(base, tmp_path))
    reset_skip_counts()
    ds = build_training_set(cfg.data, ANCHOR_TOKENS, length=400, seed=0)
    seen = {ds[i]["source"] for i in range(60)}
    assert seen == {"general", "anomaly-instruct", "anomaly-seg", "vqa"}
    assert set(skip_counts()) >= {s["kind"] for s in cfg.data.sources}


def _check(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "agvas.cli", "data", "check", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=120)


def test_data_check_paper_recipe(base: Path, tmp_path: Path) -> None:
    proc = _check(str(paper_config(base, tmp_path)), "--limit", "0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for kind in KINDS:
        assert f"({kind})" in proc.stdout
    assert "[NOR][ANO][SEG]" in proc.stdout and "cannot read image" in proc.stdout
    # a source that yields nothing fails the check and is named
    broken = yaml.safe_load(paper_config(base, tmp_path).read_text())
    broken["data"]["sources"][0]["root"] = str(tmp_path / "empty")
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    proc = _check(str(tmp_path / "broken.yaml"), "--quick")
    assert proc.returncode == 1
    assert "FAIL real-iad (real-iad)" in proc.stdout and "realiad_jsons" in proc.stdout


def test_data_check_tiny_recipe_own_roots(tmp_path: Path) -> None:
    """configs/tiny-real.yaml with its prepared roots replaced by one built here (CI also runs it on the
    real roots, prepared by .ci/run)."""
    root = trees.anomaly_instruct(tmp_path / "real")
    roots = yaml.safe_dump([{"root": str(root), "splits": ["test"]}], default_flow_style=True).strip()
    proc = _check("configs/tiny-real.yaml", "--quick", "--set", f"data.anomaly_datasets={roots}",
                  "--set", f"data.validation=[{root}]", "--set", "data.textures=null",
                  "--set", f"data.photos=[{root}]")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "synthetic anomalies" in proc.stdout and "procedural shapes (VQA)" in proc.stdout
