"""Real training sets in the mixture: splits, unions, augmentation, CamVid, validation, and a training run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agvas.anchors import ANCHOR_TOKENS, SEG
from agvas.data.augment import RealAugment
from agvas.data.camvid import CamVidSource, class_phrase
from agvas.data.meta import Entry, write_meta
from agvas.data.mixture import AnomalyInstructSource, AnomalySegSource, GeneratorPool, MetaPool, UnionPool
from agvas.data.recipe import (
    build_training_set,
    category_split,
    photo_bank,
    real_augment,
    real_pools,
    synthetic_pool,
    validation_samples,
)
from agvas.io import DataError, save_mask_png, save_png
from agvas.train.config import DataSection, TrainConfig, datasets_seen


def make_visa_like(root: Path, n_good: int = 3, n_bad: int = 2) -> Path:
    """The MVTec/VisA convention: `train` holds only good images, every anomaly is in `test`."""
    rng = np.random.default_rng(1)
    train, test = [], []
    for i in range(n_good):
        save_png(root / f"good{i}.png", rng.integers(90, 110, (36, 48, 3), dtype=np.uint8))
        (train if i else test).append(Entry(f"good{i}.png", "", "capsule", "good", 0))
    for i in range(n_bad):
        image = rng.integers(90, 110, (36, 48, 3), dtype=np.uint8)
        mask = np.zeros((36, 48), np.uint8)
        mask[10:26, 12:30] = 1
        image[mask > 0] = 250
        save_png(root / f"bad{i}.png", image)
        save_mask_png(root / f"bad{i}_mask.png", mask)
        test.append(Entry(f"bad{i}.png", f"bad{i}_mask.png", "capsule", "crack", 1))
    write_meta(root, {"capsule": test}, {"capsule": train})
    return root


def make_camvid(root: Path) -> Path:
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "classes.json").write_text(json.dumps({"classes": ["Sky", "Road", "SignSymbol", "Unlabelled"],
                                                   "ignore_index": 3}))
    labels = np.zeros((30, 40), np.uint8)
    labels[15:] = 1
    labels[2:6, 2:6] = 2
    labels[0, 0] = 3
    image = np.stack([labels * 60] * 3, -1).astype(np.uint8)
    Image.fromarray(image).save(root / "images" / "train" / "f1.jpg")
    Image.fromarray(labels).save(root / "labels" / "train" / "f1.png")
    (root / "labels" / "train" / "broken.png").write_bytes(b"not a png")
    Image.fromarray(image).save(root / "images" / "train" / "broken.jpg")
    return root


def test_meta_pool_reads_the_splits_it_is_given(tmp_path):
    root = make_visa_like(tmp_path)
    assert len(MetaPool(root, split="train").anomalous) == 0  # what the trainer used to see of VisA
    both = MetaPool(root, split=["train", "test"])
    assert (len(both.normal), len(both.anomalous)) == (3, 2)
    rng = np.random.default_rng(0)
    kinds = [both.draw(rng, normal_rate=0.25).anomalous for _ in range(400)]
    assert 0.65 < np.mean(kinds) < 0.85


def test_union_pool_is_a_pool_for_both_anomaly_sources(tmp_path):
    """Regression: a UnionPool used to be wrapped as a generator ('UnionPool' object is not callable)."""
    root = make_visa_like(tmp_path)
    synth = GeneratorPool(lambda rng: (np.zeros((20, 20, 3), np.uint8), np.ones((20, 20), np.uint8)))
    union = UnionPool([synth, MetaPool(root, split=["train", "test"])], [0.0, 1.0])
    rng = np.random.default_rng(0)
    for source in (AnomalySegSource(union, normal_rate=0.5), AnomalyInstructSource(union, normal_rate=0.5)):
        samples = [source.sample(rng) for _ in range(30)]
        assert {s["image"].shape for s in samples} == {(36, 48, 3)}  # weight 0: never the generator
        assert {s["anomalous"] for s in samples} == {True, False}
    with pytest.raises(ValueError, match="one weight"):
        UnionPool([synth], [1.0, 2.0])


def test_real_augment_moves_the_mask_with_the_image_and_never_lights_it(tmp_path):
    rng = np.random.default_rng(0)
    image = np.full((60, 80, 3), 40, np.uint8)
    mask = np.zeros((60, 80), np.uint8)
    mask[10:30, 50:75] = 1
    image[mask > 0] = 220
    aug = RealAugment(64, crop_prob=1.0, rotate_prob=1.0)
    for _ in range(20):
        img, m = aug(image, mask, rng)
        assert img.shape == (64, 64, 3) and m.shape == (64, 64) and set(np.unique(m)) <= {0, 1}
        if m.any() and (~m.astype(bool)).any():
            inner = img[m > 0].mean()
            outer = img[m == 0].mean()
            assert inner > outer + 80  # the bright defect is where the mask says, after every change
    out_a = RealAugment(64)(image, mask, np.random.default_rng(5))
    out_b = RealAugment(64)(image, mask, np.random.default_rng(5))
    assert all(np.array_equal(a, b) for a, b in zip(out_a, out_b, strict=True))


def test_a_crop_without_the_defect_is_a_normal_sample(tmp_path):
    root = make_visa_like(tmp_path, n_good=0, n_bad=1)
    cut_away = lambda image, mask, rng: (image[:8, :8], mask[:8, :8])  # noqa: E731 - the defect is at 10..26
    pool = MetaPool(root, split="test", augment=cut_away)
    item = pool.draw(np.random.default_rng(0))
    assert not item.anomalous and not item.mask.any()


def test_camvid_source_names_a_present_class_and_skips_bad_frames(tmp_path):
    source = CamVidSource(make_camvid(tmp_path))
    assert len(source) == 2 and class_phrase("SignSymbol") == "traffic sign"
    rng = np.random.default_rng(0)
    asked = set()
    for _ in range(30):
        s = source.sample(rng)
        question, answer = s["conversation"][0]["content"], s["conversation"][1]["content"]
        assert SEG in answer and s["source"] == "general" and not s["anomalous"]
        name = next(n for n in ("sky", "road", "traffic sign") if n in question)
        asked.add(name)
        expected = {"sky": 0, "road": 1, "traffic sign": 2}[name]
        assert s["mask"].sum() > 0 and s["mask"][10, 20] == (expected == 0) and s["mask"][20, 20] == (expected == 1)
    assert asked == {"sky", "road", "traffic sign"} and "unlabelled" not in asked
    assert list(source.skipped) == [str(tmp_path / "labels" / "train" / "broken.png")]
    with pytest.raises(DataError, match="classes.json"):
        CamVidSource(tmp_path / "nowhere")


def test_training_set_mixes_real_sets_with_their_splits_and_rates(tmp_path):
    root = make_visa_like(tmp_path / "visa")
    cfg = DataSection(image_size=32, anomaly_datasets=[{"root": str(root), "splits": ["train", "test"]}],
                      real_share=1.0, real_normal_rate=0.5, camvid=str(make_camvid(tmp_path / "camvid")),
                      camvid_share=1.0, rates={"anomaly-seg": 1.0, "anomaly-instruct": 1.0, "general": 1.0})
    ds = build_training_set(cfg, ANCHOR_TOKENS, length=90, seed=0)
    samples = [ds[i] for i in range(len(ds))]
    real = [s for s in samples if s["source"].startswith("anomaly")]
    assert {s["anomalous"] for s in real} == {True, False}
    good = [s for s in real if not s["anomalous"]]
    assert all(not s["mask"].any() and "[NOR]" in s["conversation"][-1]["content"] for s in good)
    general = [s for s in samples if s["source"] == "general"]
    assert general and all(any(w in s["conversation"][0]["content"] for w in ("sky", "road", "traffic sign"))
                           for s in general)
    with pytest.raises(ValueError, match=r"anomaly_datasets\[0\]: unknown key"):
        real_pools(DataSection(anomaly_datasets=[{"root": str(root), "split": "test"}]))


def test_validation_samples_take_every_split_evenly(tmp_path):
    root = make_visa_like(tmp_path, n_good=4, n_bad=4)
    samples = validation_samples(str(root), 4, 32)
    assert len(samples) == 4 and {s.anomalous for s in samples} == {True, False}
    assert all(s.image.shape == (32, 32, 3) and s.image.flags.writeable for s in samples)


def test_photos_are_good_images_with_synthetic_defects_painted_on(tmp_path):
    root = make_visa_like(tmp_path / "visa", n_good=3, n_bad=2)
    cfg = DataSection(image_size=48, photos=[str(root)], photo_share=1.0, normal_fraction=0.3)
    bank = photo_bank(cfg)
    assert {k: sorted(Path(f).name for f in v) for k, v in bank.files.items()} == {
        "photo_capsule": ["good0.png", "good1.png", "good2.png"]}  # every split, never a defective image
    cats, _ = category_split(cfg)
    pool = synthetic_pool(cfg, cats, None)
    rng = np.random.default_rng(0)
    items = [pool.draw(rng) for _ in range(60)]
    assert {i.cls_name for i in items} == {"capsule"}
    bad = [i for i in items if i.anomalous]
    assert 25 < len(bad) < 60 and all(i.mask.any() for i in bad)
    assert all(not i.mask.any() for i in items if not i.anomalous)
    assert "fold" not in {i.metadata["defect"] for i in bad}  # held-out kinds stay held out on photos
    assert {i.metadata["family"] for i in items} == {"photo_capsule"}
    seen = datasets_seen(TrainConfig(data=cfg))
    assert f"good photographs (synthetic defects painted on): {root}" in seen
    with pytest.raises(ValueError, match="photo_share"):
        synthetic_pool(DataSection(photos=[str(root)], photo_share=1.5), cats, None)
    only_bad = tmp_path / "bad"
    write_meta(only_bad, {"capsule": [Entry("bad.png", "bad_mask.png", "capsule", "crack", 1)]})
    with pytest.raises(ValueError, match="no good images"):
        photo_bank(DataSection(photos=[str(only_bad)]))


def test_glare_and_exposure_reach_every_training_image_source(tmp_path):
    root = make_visa_like(tmp_path / "visa", n_good=3, n_bad=2)
    cfg = DataSection(image_size=48, photos=[str(root)], photo_share=0.5, glare=1.0, exposure=1.0)
    cats, _ = category_split(cfg)
    rng = np.random.default_rng(0)
    pool = synthetic_pool(cfg, cats, None)
    items = [pool.draw(rng) for _ in range(12)]
    # textures and photos alike, good and defective alike
    assert {i.metadata["family"].startswith("photo_") for i in items} == {True, False}
    assert all("glare_gain" in i.metadata["nuisance"] for i in items)
    assert sum("exposure_scale" in i.metadata["nuisance"] for i in items) >= 10  # a hidden defect drops it
    assert (real_augment(cfg).glare, real_augment(cfg).exposure) == (1.0, 1.0)
    assert (real_augment(DataSection()).glare, real_augment(DataSection()).exposure) == (0.0, 0.0)
    assert real_augment(DataSection(augment_real=False)) is None
    plain_pool = synthetic_pool(DataSection(image_size=48), cats, None)
    plain = [plain_pool.draw(rng) for _ in range(4)]
    assert not any({"glare_gain", "exposure_scale"} & set(i.metadata["nuisance"]) for i in plain)  # opt-in
