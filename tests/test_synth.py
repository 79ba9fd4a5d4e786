"""The synthetic anomaly generator: exact masks, determinism, zero-shot holdout, dataset files, CLI."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from agvas.cli import app
from agvas.data.meta import load_meta, load_sample
from agvas.data.synth import (
    DEFAULT_HOLDOUT_DEFECTS,
    DEFAULT_HOLDOUT_FAMILIES,
    DEFECT_KINDS,
    PROCEDURAL_FAMILIES,
    SYNTH_META_FILE,
    TextureBank,
    describe_mask,
    generate_dataset,
    generate_sample,
    sample_at,
    split_categories,
)
from agvas.data.synth.describe import grid_location, size_word
from agvas.io import read_image_rgb, read_mask

META_KEYS = {"family", "defect", "location", "area_fraction", "size", "shape", "colour", "n_regions", "bbox",
             "seed", "index", "split"}


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _check_exact(sample, min_mean: float = 8.0) -> None:
    """The mask covers the visibly changed pixels and nothing outside it changed at all."""
    m = sample.mask.astype(bool)
    diff = np.abs(sample.image.astype(int) - sample.reference.astype(int))
    assert m.any(), sample.meta
    assert diff[~m].max() == 0
    assert diff[m].mean(-1).mean() > min_mean
    assert (diff[m].max(-1) > 0).mean() > 0.5  # the mask is mostly pixels that really changed


@pytest.fixture()
def tiny_textures(tmp_path: Path) -> Path:
    """Two made-up texture classes, so that real-texture families are tested without shared data."""
    root = tmp_path / "tex"
    rng = np.random.default_rng(0)
    for cls in ("stripes", "dots"):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            img = (rng.random((90, 100, 3)) * 80 + np.linspace(60, 170, 100)[None, :, None]).astype(np.uint8)
            Image.fromarray(img).save(root / cls / f"{cls}_{i}.jpg")
    (root / "empty").mkdir()  # a folder without images is not a family
    return root


# ----------------------------------------------------------------------------- samples


@pytest.mark.parametrize("family", PROCEDURAL_FAMILIES)
def test_every_defect_kind_has_an_exact_visible_mask(family: str) -> None:
    for k, kind in enumerate(DEFECT_KINDS):
        for seed, size in ((0, 128), (1, 128), (2, 96), (3, 256)):
            s = generate_sample(np.random.default_rng([seed, k]), family, kind, size=size)
            assert s.image.shape == (size, size, 3) and s.image.dtype == np.uint8
            assert s.mask.shape == (size, size) and s.mask.dtype == np.uint8 and set(np.unique(s.mask)) <= {0, 1}
            _check_exact(s)
            assert s.meta["defect"] == kind and s.meta["family"] == family
            assert s.meta["n_regions"] >= 1 and s.meta["size"] in {"tiny", "small", "medium", "large"}


def test_normal_images_have_empty_masks_and_vary() -> None:
    images = []
    for i, family in enumerate(PROCEDURAL_FAMILIES):
        s = generate_sample(np.random.default_rng(i), family, None, size=96)
        assert not s.mask.any()
        assert np.array_equal(s.image, s.reference)
        assert s.meta["defect"] == "good" and s.meta["anomaly"] == 0 and s.meta["location"] is None
        images.append(s.image)
    # nuisances (illumination, noise) are on normal images too: never a perfectly flat image
    assert all(float(im.std()) > 2 for im in images)


def test_sample_is_a_function_of_its_rng() -> None:
    a = generate_sample(np.random.default_rng(7), "round_parts", "missing", size=96)
    b = generate_sample(np.random.default_rng(7), "round_parts", "missing", size=96)
    c = generate_sample(np.random.default_rng(8), "round_parts", "missing", size=96)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask) and a.meta == b.meta
    assert not np.array_equal(a.image, c.image)


def test_highlights_brighten_the_surface_and_never_enter_the_mask() -> None:
    from agvas.data.synth.realism import apply_nuisance, sample_nuisance

    # the same draw with and without highlights: everything before the highlight is shared, so the
    # highlight is the only difference (noise off to compare exactly)
    plain = sample_nuisance(np.random.default_rng(3), 96, 1.0, glare=0.0)
    lit = sample_nuisance(np.random.default_rng(3), 96, 1.0, glare=1.0)
    assert plain.glare is None and lit.glare is not None and lit.glare.max() == pytest.approx(1.0, abs=0.05)
    assert "glare_gain" in lit.summary and "glare_gain" not in plain.summary
    plain.noise = lit.noise = None
    surface = np.full((96, 96, 3), 0.2, np.float32)
    a, b = apply_nuisance(surface.copy(), plain), apply_nuisance(surface.copy(), lit)
    assert np.all(b >= a - 1e-6) and float((b - a).max()) > 0.1
    assert np.allclose(a[lit.glare < 1e-4], b[lit.glare < 1e-4], atol=1e-3)  # far from it: unchanged
    # a crop of the fields (the defect window) matches the full image
    window = (slice(10, 50), slice(20, 70))
    assert np.allclose(apply_nuisance(surface[window].copy(), lit, window), b[window], atol=1e-6)
    # glare 0 draws nothing more: the held-out set and the page's examples reproduce exactly
    r0, r1 = np.random.default_rng(5), np.random.default_rng(5)
    sample_nuisance(r0, 32), sample_nuisance(r1, 32, glare=0.0)
    assert r0.random() == r1.random()
    # on a defect sample the highlight is shared by the image and its twin: the mask stays exact
    for seed in range(6):
        s = generate_sample(np.random.default_rng(seed), "metal", "stain", size=96, glare=1.0)
        assert "glare_gain" in s.meta["nuisance"]
        _check_exact(s)


def test_exposure_darkens_or_flattens_and_never_enters_the_mask() -> None:
    from agvas.data.synth.realism import apply_nuisance, sample_nuisance, unexposed

    draws = [sample_nuisance(np.random.default_rng(s), 64, 1.0, exposure=1.0) for s in range(40)]
    assert all(d.exposure_scale < 1.0 and "exposure_scale" in d.summary for d in draws)
    dark = [d for d in draws if d.exposure_pivot == 0.0]
    flat = [d for d in draws if d.exposure_pivot > 0.0]
    assert dark and flat  # both kinds are drawn
    ramp = np.repeat(np.linspace(0.05, 0.95, 64, dtype=np.float32)[None, :, None], 64, 0).repeat(3, -1)
    for d in dark + flat:
        d.noise = None
        plain, seen = apply_nuisance(ramp.copy(), unexposed(d)), apply_nuisance(ramp.copy(), d)
        assert "exposure_scale" not in unexposed(d).summary
        assert float(seen.std()) < float(plain.std())  # less contrast either way
        if d.exposure_pivot == 0.0:
            assert float(seen.mean()) < 0.6 * float(plain.mean())  # darker
    # exposure 0 draws nothing more: earlier datasets reproduce exactly
    r0, r1 = np.random.default_rng(5), np.random.default_rng(5)
    sample_nuisance(r0, 32, glare=0.5), sample_nuisance(r1, 32, glare=0.5, exposure=0.0)
    assert r0.random() == r1.random()
    # defect and twin share the exposure: the mask stays exact; a defect it hides keeps the defect and
    # loses the exposure instead, so generation never fails for it
    kept = 0
    for seed in range(12):
        s = generate_sample(np.random.default_rng(seed), ("metal", "marble")[seed % 2],
                            ("stain", "scratch", "crack")[seed % 3], size=96, exposure=1.0)
        kept += "exposure_scale" in s.meta["nuisance"]
        _check_exact(s)
    assert kept >= 8


def test_unknown_names_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown defect"):
        generate_sample(np.random.default_rng(0), "wood", "dent", size=64)
    with pytest.raises(ValueError, match="unknown family"):
        generate_sample(np.random.default_rng(0), "plastic", None, size=64)
    with pytest.raises(ValueError, match="texture folder"):
        generate_sample(np.random.default_rng(0), "dtd_banded", None, size=64)


def test_descriptions_follow_the_mask() -> None:
    assert grid_location(10, 10, 300, 300) == "top left"
    assert grid_location(150, 150, 300, 300) == "center"
    assert grid_location(290, 150, 300, 300) == "bottom"
    assert grid_location(150, 290, 300, 300) == "right"
    assert size_word(0.001) == "tiny" and size_word(0.5) == "large"
    img = np.full((100, 100, 3), 200, np.uint8)
    mask = np.zeros((100, 100), np.uint8)
    mask[70:74, 5:50] = 1
    img[mask.astype(bool)] = (90, 40, 40)
    d = describe_mask(img, mask)
    assert d["shape"] == "elongated" and d["location"] == "bottom left" and d["n_regions"] == 1
    assert d["bbox"] == [5, 70, 50, 74] and d["colour"].startswith("darker") and "reddish" in d["colour"]
    yy, xx = np.mgrid[0:100, 0:100]
    disc = ((yy - 50) ** 2 + (xx - 50) ** 2 < 15**2).astype(np.uint8)
    assert describe_mask(np.full((100, 100, 3), 50, np.uint8) + disc[..., None] * 100, disc)["shape"] == "round"
    assert describe_mask(img, np.zeros_like(mask))["n_regions"] == 0


# ----------------------------------------------------------------------------- holdout


def test_split_categories_rule() -> None:
    fams = ["weave", "wood", "grid", "dtd_bubbly"]
    kinds = ["scratch", "hole", "fold"]
    cats = split_categories(fams, kinds, ["grid", "dtd_bubbly", "dtd_missing"], ["fold"])
    assert cats.ignored == ("dtd_missing",)
    for f, k in cats.train_pairs:
        assert f in ("weave", "wood") and k in ("scratch", "hole")
    assert len(cats.train_pairs) == 4 and set(cats.train_normals) == {"weave", "wood"}
    for f, k in cats.test_pairs:
        assert f in ("grid", "dtd_bubbly") or k == "fold"
    assert ("weave", "fold") in cats.test_pairs and ("grid", "scratch") in cats.test_pairs
    assert len(cats.test_pairs) == 4 * 3 - 4 and set(cats.test_normals) == {"grid", "dtd_bubbly"}
    only_kinds = split_categories(fams, kinds, [], ["fold"])
    assert set(only_kinds.test_normals) == set(fams)  # normals have no kind: all families
    none = split_categories(fams, kinds, [], [])
    assert none.train_pairs == none.test_pairs and len(none.train_pairs) == 12
    assert "fold" in DEFAULT_HOLDOUT_DEFECTS and "grid" in DEFAULT_HOLDOUT_FAMILIES


def test_train_and_test_splits_are_disjoint_in_categories(tmp_path: Path) -> None:
    generate_dataset(tmp_path, n=40, seed=3, size=64, holdout_families=["grid", "marble"],
                     holdout_defects=["fold", "hole"], split="both")
    train, test = load_meta(tmp_path, "train"), load_meta(tmp_path, "test")
    train_e = [e for es in train.values() for e in es]
    test_e = [e for es in test.values() for e in es]
    assert len(train_e) == 40 and len(test_e) == 40
    for e in train_e:
        assert e.cls_name not in ("grid", "marble") and e.specie_name not in ("fold", "hole")
    for e in test_e:
        if e.anomaly:
            assert e.cls_name in ("grid", "marble") or e.specie_name in ("fold", "hole")
        else:
            assert e.cls_name in ("grid", "marble")
    assert any(e.anomaly for e in test_e) and any(not e.anomaly for e in test_e)


# ----------------------------------------------------------------------------- datasets


def test_dataset_is_deterministic_and_restartable(tmp_path: Path) -> None:
    args = dict(n=20, seed=11, size=64, families=["weave", "square_parts", "grid"], split="both")
    generate_dataset(tmp_path / "a", **args)
    generate_dataset(tmp_path / "b", **args, workers=2)  # parallel writing gives the same bytes
    generate_dataset(tmp_path / "c", **{**args, "seed": 12})
    assert _tree_hash(tmp_path / "a") == _tree_hash(tmp_path / "b")
    assert _tree_hash(tmp_path / "a") != _tree_hash(tmp_path / "c")
    # any single image can be regenerated from (seed, split, index) alone
    lines = [json.loads(ln) for ln in (tmp_path / "a" / SYNTH_META_FILE).read_text().splitlines()]
    rec = lines[5]
    cats = split_categories(["weave", "square_parts", "grid"], DEFECT_KINDS)
    again = sample_at(11, rec["split"], rec["index"], cats, size=64)
    assert np.array_equal(again.image, read_image_rgb(tmp_path / "a" / rec["img_path"]))


def test_dataset_files_and_meta(tmp_path: Path) -> None:
    summary = generate_dataset(tmp_path, n=24, seed=0, size=64, normal_fraction=0.25, split="train")
    assert summary.images == 24 and sum(summary.counts.values()) == 24
    assert not load_meta(tmp_path, "test")
    meta = load_meta(tmp_path, "train")
    lines = [json.loads(ln) for ln in (tmp_path / SYNTH_META_FILE).read_text().splitlines()]
    assert len(lines) == 24 and all(set(r) >= META_KEYS for r in lines)
    by_path = {r["img_path"]: r for r in lines}
    n_normal = 0
    for cls, entries in meta.items():
        for e in entries:
            assert e.cls_name == cls and e.img_path.startswith("images/train/")
            s = load_sample(tmp_path, e)  # raises when a mask and its image differ in size
            r = by_path[e.img_path]
            assert r["family"] == cls and r["defect"] == e.specie_name
            if e.anomaly:
                raw = np.asarray(Image.open(tmp_path / e.mask_path))
                assert set(np.unique(raw)) == {0, 255} and s.mask.sum() > 0
                assert r["bbox"] is not None and r["location"] and r["colour"]
            else:
                n_normal += 1
                assert e.mask_path == "" and e.specie_name == "good" and not s.mask.any()
    assert 0 < n_normal < 24
    leftovers = [p for p in tmp_path.rglob("*.tmp")]
    assert not leftovers
    # a later test split is added next to the train split, not written over it
    generate_dataset(tmp_path, n=8, seed=0, size=64, split="test")
    assert len([e for es in load_meta(tmp_path, "train").values() for e in es]) == 24
    assert len([e for es in load_meta(tmp_path, "test").values() for e in es]) == 8
    assert len((tmp_path / SYNTH_META_FILE).read_text().splitlines()) == 32


def test_dataset_rejects_unknown_categories(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown family/kind"):
        generate_dataset(tmp_path, n=2, families=["velvet"])
    with pytest.raises(ValueError, match="no categories"):
        generate_dataset(tmp_path, n=2, families=["grid"], holdout_families=["grid"], split="train")


# ----------------------------------------------------------------------------- textures


def test_texture_folder_families(tmp_path: Path, tiny_textures: Path) -> None:
    bank = TextureBank(tiny_textures)
    assert bank.families == ["dtd_dots", "dtd_stripes"]
    for kind in (None, "scratch", "missing", "fold"):
        s = generate_sample(np.random.default_rng(1), "dtd_dots", kind, size=80, textures=tiny_textures)
        if kind:
            _check_exact(s)
    generate_dataset(tmp_path / "ds", n=10, seed=1, size=64, textures=tiny_textures,
                     holdout_families=["dtd_stripes"], holdout_defects=[])
    test = load_meta(tmp_path / "ds", "test")
    assert set(test) == {"dtd_stripes"}


def test_dtd_textures(shared_data: str) -> None:
    bank = TextureBank(os.path.join(shared_data, "dtd"))
    assert "dtd_banded" in bank.families and "dtd_crystalline" in bank.families
    for i, family in enumerate(bank.families):
        s = generate_sample(np.random.default_rng(i), family, DEFECT_KINDS[i % len(DEFECT_KINDS)], 128, bank)
        _check_exact(s)
    cats = split_categories(PROCEDURAL_FAMILIES + tuple(bank.families), DEFECT_KINDS)
    assert not cats.ignored and {"dtd_crystalline", "dtd_bubbly", "grid"} == set(cats.test_normals)


# ----------------------------------------------------------------------------- CLI


def test_cli_synth(tmp_path: Path, tiny_textures: Path) -> None:
    out = tmp_path / "cli"
    res = CliRunner().invoke(app, ["data", "synth", "--out", str(out), "--n", "6", "--seed", "2", "--size", "64",
                                   "--textures", str(tiny_textures), "--families", "wood,metal,dtd_dots",
                                   "--holdout-families", "dtd_dots", "--holdout-defects", "none",
                                   "--split", "both"])
    assert res.exit_code == 0, res.output
    assert "images/s" in res.output
    train, test = load_meta(out, "train"), load_meta(out, "test")
    assert set(train) <= {"wood", "metal"} and set(test) == {"dtd_dots"}
    for entries in test.values():
        for e in entries:
            if e.anomaly:
                assert read_mask(out / e.mask_path).shape == read_image_rgb(out / e.img_path).shape[:2]
    lit = CliRunner().invoke(app, ["data", "synth", "--out", str(tmp_path / "lit"), "--n", "3", "--size", "48",
                                   "--split", "train", "--glare", "1", "--exposure", "1"])
    assert lit.exit_code == 0, lit.output
    lines = [json.loads(ln)["nuisance"] for ln in (tmp_path / "lit" / SYNTH_META_FILE).read_text().splitlines()]
    assert len(lines) == 3 and all("glare_gain" in n and "exposure_scale" in n for n in lines)
    bad = CliRunner().invoke(app, ["data", "synth", "--out", str(tmp_path / "bad"), "--n", "2",
                                   "--families", "velvet"])
    assert bad.exit_code != 0 and "velvet" in bad.output


def test_cli_synth_warns_only_about_holdout_names_the_user_gave(tmp_path: Path) -> None:
    common = ["data", "synth", "--n", "2", "--seed", "0", "--size", "32", "--split", "test"]
    quiet = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "default")])  # no --textures
    assert quiet.exit_code == 0, quiet.output
    assert "holdout names" not in quiet.output and "dtd_" not in quiet.output
    named = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "named"), "--holdout-families",
                                     "grid,dtd_bubbly", "--holdout-defects", "fold,smudge"])
    assert named.exit_code == 0, named.output
    assert "holdout names not among the families/kinds (ignored): dtd_bubbly, smudge" in named.output
