"""The streaming metrics against scikit-learn, a brute-force AUPRO and hand-computed cases."""

from __future__ import annotations

import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from agvas.data.instruct import Facts, normal_record, record_from_mask, record_from_metadata, write_record
from agvas.data.templates import DIRECT_ANSWERS, DIRECT_ANSWERS_NORMAL, render, render_multi_turn
from agvas.evaluate.metrics import (
    FALSE_ALARM_GRID,
    IMAGE_METRIC_KEYS,
    ORACLE_METRIC_KEYS,
    PIXEL_METRIC_KEYS,
    TEXT_KEYS,
    CategoryAccumulator,
    cell_fractions,
    evaluate_category,
    image_ranking_metrics,
    mean_over_categories,
    smooth,
)
from agvas.verdict import text_verdict

TOL = 1e-6  # on fractions; results are in percent, hence the 100 * TOL below


def sk_f1_max(y: np.ndarray, s: np.ndarray) -> float:
    p, r, _ = precision_recall_curve(y, s)
    keep = (p + r) > 0
    return float(np.max(2 * p[keep] * r[keep] / (p[keep] + r[keep])))


def brute_aupro(scores: list[np.ndarray], gts: list[np.ndarray], limit: float = 0.3) -> float:
    """Per-pixel reference in the style of the MVTec AD evaluation code, written independently:
    every pixel changes FPR or PRO by its own weight, cumulated in descending score order;
    one curve point per distinct score (the last of each tie group)."""
    s_all, fp_w, pro_w = [], [], []
    n_regions = 0
    n_neg = sum(int((g == 0).sum()) for g in gts)
    for s, g in zip(scores, gts, strict=True):
        lab, n = ndimage.label(g > 0, structure=np.ones((3, 3)))
        sizes = np.bincount(lab.ravel())
        w = np.where(lab > 0, 1.0 / sizes[lab], 0.0)
        s_all.append(s.ravel().astype(np.float64))
        fp_w.append((lab.ravel() == 0) / n_neg)
        pro_w.append(w.ravel())
        n_regions += n
    s = np.concatenate(s_all)
    order = np.argsort(-s, kind="stable")
    fpr = np.cumsum(np.concatenate(fp_w)[order])
    pro = np.cumsum(np.concatenate(pro_w)[order]) / n_regions
    ss = s[order]
    last = np.append(ss[1:] != ss[:-1], True)
    x = np.concatenate(([0.0], fpr[last], [1.0]))
    y = np.concatenate(([0.0], pro[last], [1.0]))
    inside = x <= limit
    xi = np.append(x[inside], limit)
    yi = np.append(y[inside], np.interp(limit, x, y))
    return float(np.sum(np.diff(xi) * (yi[1:] + yi[:-1]) / 2) / limit)


def same(a: dict, b: dict) -> bool:
    """Dict equality where NaN equals NaN."""
    return a.keys() == b.keys() and all(
        a[k] == b[k] or (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k])) for k in a
    )


def feed(scores, gts, masks=None, **kw) -> CategoryAccumulator:
    acc = CategoryAccumulator(**kw)
    for i, (s, g) in enumerate(zip(scores, gts, strict=True)):
        acc.add(s, g, None if masks is None else masks[i])
    return acc


def random_category(rng: np.random.Generator, levels: int | None = None):
    n = int(rng.integers(1, 6))
    h, w = (int(v) for v in rng.integers(4, 40, size=2))
    scores, gts = [], []
    for _ in range(n):
        g = np.zeros((h, w), dtype=np.uint8)
        if rng.random() < 0.7:  # some images normal
            g = (ndimage.gaussian_filter(rng.random((h, w)), 1.5) > 0.55).astype(np.uint8)
        s = rng.random((h, w)) + 0.4 * g * rng.random()
        if levels is not None:
            s = np.floor(s / s.max() * levels) / levels
        scores.append(s.astype(np.float32))
        gts.append(g)
    return scores, gts


def check_against_references(scores, gts) -> dict:
    res = feed(scores, gts).summarise()
    y = np.concatenate([g.ravel() for g in gts]) > 0
    s = np.concatenate([x.ravel() for x in scores])
    assert res["ap"] == pytest.approx(100 * average_precision_score(y, s), abs=100 * TOL)
    assert res["f1_max"] == pytest.approx(100 * sk_f1_max(y, s), abs=100 * TOL)
    if 0 < y.sum() < y.size:
        assert res["auroc"] == pytest.approx(100 * roc_auc_score(y, s), abs=100 * TOL)
        assert res["aupro"] == pytest.approx(100 * brute_aupro(scores, gts), abs=100 * TOL)
    return res


@pytest.mark.parametrize("seed", range(12))
def test_random_categories_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores, gts = random_category(rng)
    if not any(g.any() for g in gts):
        gts[0][0, 0] = 1
    check_against_references(scores, gts)


@pytest.mark.parametrize("seed", range(8))
def test_heavy_ties_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    scores, gts = random_category(rng, levels=4)  # 5 levels: 0, .25, .5, .75, 1
    if not any(g.any() for g in gts):
        gts[-1][-1, -1] = 1
    assert len(np.unique(np.concatenate([s.ravel() for s in scores]))) <= 5
    check_against_references(scores, gts)


def test_large_random_category_matches_sklearn() -> None:
    rng = np.random.default_rng(7)
    scores = [rng.random((96, 128)).astype(np.float32) for _ in range(6)]
    gts = [(ndimage.gaussian_filter(rng.random((96, 128)), 3) > 0.52).astype(np.uint8) for _ in range(6)]
    gts[2][:] = 0
    scores = [s + 0.2 * g for s, g in zip(scores, gts, strict=True)]
    check_against_references(scores, gts)


def test_chunkings_give_identical_results() -> None:
    rng = np.random.default_rng(3)
    s = np.round(rng.random(2400) * 50).astype(np.float32) / 50
    y = (rng.random(2400) < 0.2).astype(np.uint8)
    results = []
    for shape in [(1, 40, 60), (4, 20, 30), (24, 10, 10), (2400, 1, 1)]:
        for reverse in (False, True):
            ss, yy = s.reshape(shape), y.reshape(shape)
            if reverse:
                ss, yy = ss[::-1], yy[::-1]
            r = feed(list(ss), list(yy)).pixel_metrics()
            results.append((r["ap"], r["f1_max"], r["auroc"], r["oracle_threshold"]))
    assert all(r == results[0] for r in results)  # exactly, not approximately
    assert results[0][0] == pytest.approx(average_precision_score(y, s), abs=TOL)
    assert results[0][1] == pytest.approx(sk_f1_max(y, s), abs=TOL)
    assert results[0][2] == pytest.approx(roc_auc_score(y, s), abs=TOL)


def test_all_normal_category_is_nan_not_zero() -> None:
    rng = np.random.default_rng(0)
    scores = [rng.random((8, 8)).astype(np.float32) for _ in range(3)]
    gts = [np.zeros((8, 8), np.uint8)] * 3
    masks = [np.zeros((8, 8), bool), np.zeros((8, 8), bool), np.ones((8, 8), bool)]
    res = feed(scores, gts, masks).summarise()
    for key in ("ap", "f1_max", "auroc", "aupro", "iou_ano", "oracle_threshold", "iou_ano_oracle", "iou_nor_oracle"):
        assert math.isnan(res[key]), key  # no F1 without anomalous pixels, so no oracle threshold either
    assert res["iou_nor"] == pytest.approx(100 * 2 / 3)
    assert (res["n_images"], res["n_anomalous"], res["n_normal"]) == (3, 0, 3)


def test_all_anomalous_pixels() -> None:
    rng = np.random.default_rng(1)
    scores = [rng.random((6, 7)).astype(np.float32) for _ in range(2)]
    gts = [np.ones((6, 7), np.uint8)] * 2
    res = feed(scores, gts).summarise()
    y = np.ones(84, bool)
    s = np.concatenate([x.ravel() for x in scores])
    assert res["ap"] == pytest.approx(100 * average_precision_score(y, s))
    assert res["ap"] == pytest.approx(100.0)
    assert res["f1_max"] == pytest.approx(100.0)
    assert math.isnan(res["auroc"]) and math.isnan(res["aupro"])  # no normal pixel: no FPR
    # F1 = 1 first at the lowest score (every pixel flagged); no normal image: no oracle IoU_nor
    assert res["oracle_threshold"] == float(s.min()) and res["iou_ano_oracle"] == 100.0
    assert math.isnan(res["iou_nor_oracle"])


def test_constant_scores() -> None:
    rng = np.random.default_rng(2)
    gts = [(rng.random((10, 10)) < 0.3).astype(np.uint8) for _ in range(3)]
    scores = [np.full((10, 10), 0.3, np.float32) for _ in range(3)]
    res = check_against_references(scores, gts)
    prevalence = np.mean(np.concatenate([g.ravel() for g in gts]))
    assert res["ap"] == pytest.approx(100 * prevalence)
    assert res["auroc"] == pytest.approx(50.0)
    # One tie group: the PRO curve is the diagonal, whose area up to 0.3 is 0.045 -> 15 %.
    assert res["aupro"] == pytest.approx(15.0)


def test_single_anomalous_pixel() -> None:
    rng = np.random.default_rng(4)
    scores = [rng.random((16, 16)).astype(np.float32) for _ in range(3)]
    gts = [np.zeros((16, 16), np.uint8) for _ in range(3)]
    gts[1][5, 9] = 1
    check_against_references(scores, gts)
    scores[1][5, 9] = 2.0  # ranked first: everything perfect
    res = check_against_references(scores, gts)
    assert res["ap"] == pytest.approx(100.0) and res["auroc"] == pytest.approx(100.0)
    assert res["aupro"] == pytest.approx(100.0)


def test_scores_outside_unit_range_and_integer_and_bool_types() -> None:
    rng = np.random.default_rng(5)
    gts = [(rng.random((12, 12)) < 0.2).astype(np.uint8) for _ in range(2)]
    check_against_references([rng.normal(size=(12, 12)).astype(np.float32) * 1e3 for _ in range(2)], gts)
    check_against_references([rng.integers(-3, 3, size=(12, 12)) for _ in range(2)], gts)
    check_against_references([rng.random((12, 12)) < 0.5 for _ in range(2)], gts)
    # sklearn refuses infinities; they rank like any finite extremes.
    inf_scores = [rng.random((12, 12)) for _ in range(2)]
    inf_scores[0][:3], inf_scores[1][:2] = -np.inf, np.inf
    finite = [np.clip(x, -1e30, 1e30) for x in inf_scores]
    assert same(feed(inf_scores, gts).summarise(), check_against_references(finite, gts))


def test_iou_hand_computed() -> None:
    z = np.zeros((4, 4), np.float32)
    g = np.zeros((4, 4), np.uint8)
    g[1:3, 1:3] = 1  # 4 pixels
    m = np.zeros((4, 4), bool)
    m[1:3, 1:4] = True  # 6 pixels, 4 of them on the GT -> IoU 4/6
    m_off = np.zeros((4, 4), bool)
    m_off[0, 0] = True  # misses the GT -> IoU 0
    empty = np.zeros((4, 4), bool)
    normal = np.zeros((4, 4), np.uint8)
    acc = CategoryAccumulator()
    acc.add(z, g, m)
    acc.add(z, g, m_off)
    acc.add(z, g, empty)
    acc.add(z, g, g.astype(bool))  # perfect -> 1
    acc.add(z, normal, empty)  # rejected -> 1
    acc.add(z, normal, m_off)  # one false pixel -> 0
    res = acc.summarise()
    assert res["iou_ano"] == pytest.approx(100 * (4 / 6 + 0 + 0 + 1) / 4)
    assert res["iou_nor"] == pytest.approx(50.0)
    assert (res["n_images"], res["n_anomalous"], res["n_normal"]) == (6, 4, 2)


# ---------------------------------------------------------------------------------------- oracle threshold
def brute_oracle(scores: list[np.ndarray], gts: list[np.ndarray]) -> tuple[float, float, float]:
    """(threshold, IoU_ano %, IoU_nor %) written independently of the accumulator: the thresholds of
    sklearn's PR curve, F1 of each from direct counts as an exact fraction, the highest threshold among
    the maxima; then the IoUs of the masks ``map >= threshold``, image by image."""
    y = np.concatenate([g.ravel() for g in gts]) > 0
    s = np.concatenate([x.ravel() for x in scores])
    p, r, thresholds = precision_recall_curve(y, s)
    f1 = {}
    for t in thresholds:
        flagged = s >= t
        f1[float(t)] = Fraction(2 * int(np.sum(flagged & y)), int(flagged.sum()) + int(y.sum()))
    best = max(f1.values())
    t = max(k for k, v in f1.items() if v == best)
    sk_f1 = 2 * p * r / np.where(p + r > 0, p + r, 1)
    assert float(best) == pytest.approx(float(np.max(sk_f1)), abs=1e-12)  # the reference agrees with sklearn
    ano = [np.sum((x >= t) & (g > 0)) / np.sum((x >= t) | (g > 0)) for x, g in zip(scores, gts, strict=True)
           if g.any()]
    nor = [not (x >= t).any() for x, g in zip(scores, gts, strict=True) if not g.any()]
    return t, 100 * float(np.mean(ano)), 100 * float(np.mean(nor)) if nor else float("nan")


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("levels", [None, 4])
def test_oracle_threshold_and_ious_match_brute_force(seed: int, levels: int | None) -> None:
    rng = np.random.default_rng(300 + seed)
    h, w, scores, gts = 12, 15, [], []
    for k in range(int(rng.integers(4, 9))):
        g = np.zeros((h, w), np.uint8)
        if k % 2:  # several normal and several anomalous images
            g = (ndimage.gaussian_filter(rng.random((h, w)), 1.5) > 0.53).astype(np.uint8)
            g[rng.integers(h), rng.integers(w)] = 1
        s = rng.random((h, w)) * 0.8 + 0.5 * g * rng.random()
        if levels is not None:  # heavy ties: many pixels share a score, maps share their maxima
            s = np.floor(s * levels) / levels
        scores.append(s.astype(np.float32))
        gts.append(g)
    sigma = 1.0 if seed % 3 == 0 else 0.0  # the oracle works on the map the pixel metrics rank
    res = feed(scores, gts, sigma=sigma).summarise()
    t, iou_ano, iou_nor = brute_oracle([smooth(s, sigma) for s in scores], gts)
    assert res["oracle_threshold"] == t
    assert res["iou_ano_oracle"] == pytest.approx(iou_ano, abs=1e-9)
    assert res["iou_nor_oracle"] == pytest.approx(iou_nor, abs=1e-9)
    # the fixed-threshold figures are untouched: they still come from the binary mask map > 0.5
    fixed = feed([smooth(s, sigma) for s in scores], gts, [s > 0.5 for s in scores]).summarise()
    assert (res["iou_ano"], res["iou_nor"]) == (fixed["iou_ano"], fixed["iou_nor"])


def test_oracle_threshold_is_the_highest_of_tied_f1_maxima() -> None:
    """Two thresholds give F1 = 2/3: flagging the 0.9 pixel alone (TP 1, FP 0) or everything >= 0.5
    (TP 2, FP 2); the highest is taken, and a pixel equal to the threshold is in the mask."""
    a = np.array([[0.9, 0.7, 0.1, 0.1]], np.float32)
    b = np.array([[0.5, 0.6, 0.1, 0.1]], np.float32)
    c = np.array([[0.2, 0.2, 0.2, 0.2]], np.float32)
    d = np.array([[0.9, 0.2, 0.2, 0.2]], np.float32)  # a normal image at exactly the threshold
    g = np.array([[1, 0, 0, 0]], np.uint8)
    z = np.zeros_like(g)
    res = feed([a, b, c], [g, g, z]).summarise()
    assert res["f1_max"] == pytest.approx(100 * 2 / 3)
    assert res["oracle_threshold"] == float(np.float32(0.9))
    assert res["iou_ano_oracle"] == pytest.approx(50.0)  # image a: 1/1, image b: 0/1
    assert res["iou_nor_oracle"] == 100.0
    with_d = feed([a, b, c, d], [g, g, z, z]).summarise()  # d's pixel breaks the tie: 2/4 < 4/7
    assert with_d["oracle_threshold"] == float(np.float32(0.5))
    assert with_d["iou_nor_oracle"] == 50.0  # c is empty at 0.5, d is not
    assert with_d["iou_ano_oracle"] == pytest.approx(100 * (1 / 2 + 1 / 2) / 2)  # a: {0.9, 0.7}, b: {0.5, 0.6}


def merged_one_by_one(scores, gts, text: str | None = None) -> CategoryAccumulator:
    """One accumulator per image, merged in order: what distributed evaluation does."""
    merged = CategoryAccumulator()
    for s, g in zip(scores, gts, strict=True):
        one = CategoryAccumulator()
        one.add(s, g, None, text)
        merged.merge(one)
    return merged


def test_false_alarm_map_says_where_good_images_are_flagged() -> None:
    g, z = np.zeros((64, 64), np.uint8), np.zeros((64, 64), np.uint8)
    g[:8, :8] = 1
    spot = np.zeros((64, 64), np.float32)
    spot[32:36, 40:44] = 0.9  # the same spot on every good image: a systematic error
    specks = [np.where(np.random.default_rng(i).random((64, 64)) > 0.999, 0.9, 0.1).astype(np.float32)
              for i in range(3)]
    scores, gts = [np.full((64, 64), 0.9, np.float32), spot, spot, *specks], [g, z, z, z, z, z]
    acc = feed(scores, gts)
    fa = acc.false_alarm_map()
    assert fa.shape == (FALSE_ALARM_GRID, FALSE_ALARM_GRID)  # the anomalous image (all flagged) is not in it
    cell = fa[16:18, 20:22]  # 64 px / 32 cells: the spot covers 2x2 cells fully on 2 of 5 good images
    assert np.allclose(cell, 2 / 5) and fa.max() == pytest.approx(2 / 5)
    expected = sum(cell_fractions(s > 0.5) for s in scores[1:]) / 5
    assert np.allclose(fa, expected) and np.allclose(merged_one_by_one(scores, gts).false_alarm_map(), fa)
    assert feed(scores[:1], gts[:1]).false_alarm_map() is None  # no good image: no map
    assert cell_fractions(np.ones((300, 200))).tolist() == np.ones((32, 32)).tolist()  # any size, shares in [0, 1]
    assert cell_fractions(np.ones((10, 7))).max() == 1.0  # maps smaller than the grid


def test_oracle_survives_merging_and_repeated_summaries() -> None:
    rng = np.random.default_rng(31)
    scores, gts = random_images(rng, levels=5)
    whole, merged = feed(scores, gts), merged_one_by_one(scores, gts)
    first = whole.summarise()
    keys = ("oracle_threshold", *ORACLE_METRIC_KEYS)
    assert [first[k] for k in keys] == [merged.summarise()[k] for k in keys] == [whole.summarise()[k] for k in keys]
    assert first["oracle_threshold"] == brute_oracle(scores, gts)[0]


def test_mean_over_categories_averages_the_oracle_ious_not_the_thresholds() -> None:
    cats = {"a": {"iou_ano_oracle": 40.0, "iou_nor_oracle": 80.0, "oracle_threshold": 0.3},
            "b": {"iou_ano_oracle": 60.0, "iou_nor_oracle": float("nan"), "oracle_threshold": 0.7}}
    with pytest.warns(UserWarning, match="iou_nor_oracle: b"):
        out = mean_over_categories(cats)
    assert out["iou_ano_oracle"] == pytest.approx(50.0) and out["iou_nor_oracle"] == pytest.approx(80.0)
    assert "oracle_threshold" not in out  # a mean of per-category thresholds is no threshold anyone used


def test_mask_defaults_to_score_above_threshold_and_gt_accepts_255() -> None:
    s = np.array([[0.9, 0.6], [0.5, 0.1]], np.float32)
    g = np.array([[255, 255], [0, 0]], np.uint8)
    res = feed([s], [g]).summarise()  # mask = s > 0.5 = top row = GT
    assert res["iou_ano"] == pytest.approx(100.0)
    res = feed([s], [g], threshold=0.7).summarise()
    assert res["iou_ano"] == pytest.approx(50.0)
    res = feed([s], [np.zeros_like(g)], threshold=0.95).summarise()
    assert res["iou_nor"] == pytest.approx(100.0)


def test_aupro_perfect_map_is_100() -> None:
    g = np.zeros((20, 20), np.uint8)
    g[2:6, 3:9] = 1
    g[12:18, 12:14] = 1
    res = feed([g.astype(np.float32)], [g]).summarise()
    assert res["aupro"] == pytest.approx(100.0)
    assert res["ap"] == pytest.approx(100.0)


def test_aupro_averages_over_regions_not_pixels() -> None:
    # Small region fully above the background, big one fully below: half the regions are found
    # at FPR 0, nothing more until FPR 1 -> PRO 0.5 on [0, 0.3] -> 50. Per pixel it would be 4/24.
    s = np.full((12, 12), 0.5, np.float32)
    g = np.zeros((12, 12), np.uint8)
    g[0:2, 0:2] = 1
    s[0:2, 0:2] = 1.0
    g2 = np.zeros((12, 12), np.uint8)
    g2[4:8, 4:9] = 1
    s2 = np.full((12, 12), 0.5, np.float32)
    s2[4:8, 4:9] = 0.0
    res = feed([s, s2], [g, g2]).summarise()
    assert res["aupro"] == pytest.approx(50.0)
    assert res["aupro"] == pytest.approx(100 * brute_aupro([s, s2], [g, g2]))


def test_aupro_regions_are_8_connected() -> None:
    # A diagonal pair is one region (8-connectivity), half of it found; a second region fully
    # found: PRO = (0.5 + 1) / 2 = 0.75 at FPR 0. With 4-connectivity it would be 2/3.
    s = np.full((10, 10), 0.5, np.float32)
    g = np.zeros((10, 10), np.uint8)
    g[0, 0] = g[1, 1] = 1
    s[0, 0], s[1, 1] = 1.0, 0.0
    g[6:8, 6:8] = 1
    s[6:8, 6:8] = 1.0
    assert feed([s], [g]).summarise()["aupro"] == pytest.approx(75.0)


def test_aupro_interpolates_at_the_limit() -> None:
    # 20 % of the normal pixels outrank the only region: PRO 0 up to FPR 0.2, then 1;
    # area up to 0.3 is 0.1 -> 33.3 %. With limit 0.2 exactly, nothing is found -> 0.
    rng = np.random.default_rng(0)
    s = np.zeros((10, 10), np.float32)
    g = np.zeros((10, 10), np.uint8)
    g[0, :5] = 1
    s[0, :5] = 0.9
    normal_idx = np.flatnonzero(g.ravel() == 0)
    s.ravel()[rng.choice(normal_idx, size=19, replace=False)] = 1.0  # 19 of 95 normals = 0.2
    res = feed([s], [g]).summarise()
    assert res["aupro"] == pytest.approx(100 * 0.1 / 0.3)
    assert feed([s], [g], aupro_limit=0.2).summarise()["aupro"] == pytest.approx(0.0)
    assert feed([s], [g], aupro_limit=1.0).summarise()["aupro"] == pytest.approx(80.0)


def test_summarise_is_repeatable_and_accepts_more_images() -> None:
    rng = np.random.default_rng(9)
    scores, gts = random_category(rng)
    gts[0][0, 0] = 1
    acc = feed(scores[:1], gts[:1])
    first = acc.summarise()
    assert same(acc.summarise(), first)
    for s, g in zip(scores[1:], gts[1:], strict=True):
        acc.add(s, g)
    assert same(acc.summarise(), feed(scores, gts).summarise())


def test_sigma_smooths_scores_not_masks() -> None:
    rng = np.random.default_rng(11)
    scores, gts = random_category(rng)
    gts[0][1, 1] = 1
    a = feed(scores, gts, sigma=2.0).summarise()
    b = feed([smooth(s, 2.0) for s in scores], gts, [s > 0.5 for s in scores]).summarise()
    assert same(a, b)
    assert smooth(scores[0], 0) is not None and np.array_equal(smooth(scores[0], 0), scores[0])
    assert np.allclose(smooth(scores[0], 1.0), ndimage.gaussian_filter(scores[0], 1.0))


def test_stored_bytes_per_pixel_are_bounded() -> None:
    rng = np.random.default_rng(12)
    acc = CategoryAccumulator()
    n_pixels = 0
    for i in range(6):
        g = (rng.random((64, 64)) < 0.3 * (i % 2)).astype(np.uint8)  # speckle: many regions
        acc.add(rng.random((64, 64)).astype(np.float32), g)
        n_pixels += g.size
    assert acc.nbytes <= 6 * n_pixels
    acc.summarise()
    assert acc.nbytes <= 6 * n_pixels  # the sorted store replaces the chunks, not added to them


def test_bad_inputs_are_refused() -> None:
    acc = CategoryAccumulator()
    with pytest.raises(ValueError, match="NaN"):
        acc.add(np.full((3, 3), np.nan), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="shape"):
        acc.add(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="HxW"):
        acc.add(np.zeros((1, 3, 3)), np.zeros((1, 3, 3)))
    with pytest.raises(ValueError, match="mask"):
        acc.add(np.zeros((3, 3)), np.zeros((3, 3)), np.zeros((2, 2)))
    assert acc.n_images == 0
    empty = acc.summarise()
    assert empty["n_images"] == 0 and math.isnan(empty["ap"]) and math.isnan(empty["iou_nor"])


def test_evaluate_category_from_generator() -> None:
    rng = np.random.default_rng(13)
    scores, gts = random_category(rng)
    gts[0][0, 0] = 1
    res = evaluate_category((s, g) for s, g in zip(scores, gts, strict=True))
    assert same(res, feed(scores, gts).summarise())
    assert set(res) == {"ap", "f1_max", "auroc", "aupro", "iou_ano", "iou_nor"} | {
        "n_images",
        "n_anomalous",
        "n_normal",
    } | set(IMAGE_METRIC_KEYS) | set(TEXT_KEYS) | set(ORACLE_METRIC_KEYS) | {"oracle_threshold"}
    assert set(PIXEL_METRIC_KEYS) == {"ap", "f1_max", "auroc", "aupro", "iou_ano", "iou_nor"}


def test_mean_over_categories() -> None:
    def r(ap, iou_nor=50.0, n=(2, 1, 1)):
        return dict(ap=ap, f1_max=40.0, auroc=80.0, aupro=60.0, iou_ano=30.0, iou_nor=iou_nor,
                    n_images=n[0], n_anomalous=n[1], n_normal=n[2])  # fmt: skip

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = mean_over_categories({"a": r(10.0), "b": r(30.0, iou_nor=70.0)})
    assert out["ap"] == pytest.approx(20.0) and out["f1_max"] == pytest.approx(40.0)
    assert out["iou_nor"] == pytest.approx(60.0)
    assert (out["n_images"], out["n_anomalous"], out["n_normal"], out["n_categories"]) == (4, 2, 2, 2)
    assert out["skipped"] == {}

    with pytest.warns(UserWarning, match="ap: c"):
        out = mean_over_categories({"a": r(10.0), "b": r(30.0), "c": r(float("nan"))})
    assert out["ap"] == pytest.approx(20.0)  # NaN skipped, not averaged as 0
    assert out["auroc"] == pytest.approx(80.0)
    assert out["skipped"] == {"ap": ["c"]}

    with pytest.warns(UserWarning):
        out = mean_over_categories({"a": r(10.0, iou_nor=float("nan"))})
    assert math.isnan(out["iou_nor"])  # undefined everywhere stays undefined


# ---------------------------------------------------------------------------------------- image level
def random_images(rng: np.random.Generator, levels: int | None = None):
    """Small maps, about half of them anomalous; with `levels` the maps (hence their maxima) tie a lot."""
    n = int(rng.integers(2, 30))
    scores, gts = [], []
    for k in range(n):
        g = np.zeros((6, 7), np.uint8)
        if k == 0 or (k > 1 and rng.random() < 0.5):  # image 0 anomalous, image 1 normal
            g[rng.integers(0, 6), rng.integers(0, 7)] = 1
        s = rng.random((6, 7)) * (0.7 + 0.5 * g.any() * rng.random())
        if levels is not None:
            s = np.floor(s * levels) / levels
        scores.append(s.astype(np.float32))
        gts.append(g)
    return scores, gts


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("levels", [None, 3])
def test_image_level_ranking_matches_sklearn(seed: int, levels: int | None) -> None:
    rng = np.random.default_rng(200 + seed)
    scores, gts = random_images(rng, levels)
    res = feed(scores, gts, sigma=0.8 if seed % 2 else 0.0).summarise()
    y = np.array([g.any() for g in gts])
    s = np.array([smooth(x, 0.8 if seed % 2 else 0.0).max() for x in scores])  # the map pixel AP ranks
    if levels is not None and seed % 2 == 0:
        assert len(np.unique(s)) < len(s)  # ties in the image scores
    assert res["image_auroc"] == pytest.approx(100 * roc_auc_score(y, s), abs=100 * TOL)
    assert res["image_ap"] == pytest.approx(100 * average_precision_score(y, s), abs=100 * TOL)
    assert res["image_f1_max"] == pytest.approx(100 * sk_f1_max(y, s), abs=100 * TOL)


@pytest.mark.parametrize("seed", range(20))
def test_image_ranking_metrics_with_ties_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(300 + seed)
    n = int(rng.integers(2, 60))
    y = rng.random(n) < rng.uniform(0.1, 0.9)
    y[0], y[1] = True, False
    s = rng.integers(0, 1 + seed % 5 + 1, n) + 0.5 * y * rng.random(n).round(1)
    got = image_ranking_metrics(s, y)
    assert got["auroc"] == pytest.approx(roc_auc_score(y, s), abs=TOL)
    assert got["ap"] == pytest.approx(average_precision_score(y, s), abs=TOL)
    assert got["f1_max"] == pytest.approx(sk_f1_max(y, s), abs=TOL)


def test_false_alarm_and_miss_rate_hand_computed() -> None:
    z = np.zeros((4, 4), np.float32)
    normal = np.zeros((4, 4), np.uint8)
    gt = normal.copy()
    gt[1, 1] = 1
    empty = np.zeros((4, 4), bool)
    spot = empty.copy()
    spot[3, 3] = True
    acc = CategoryAccumulator()
    for mask in (empty, spot, empty, spot, spot):  # 3 of 5 normal images flagged
        acc.add(z, normal, mask)
    for mask in (empty, spot, gt > 0, spot):  # 1 of 4 anomalous images missed (a wrong spot is not a miss)
        acc.add(z, gt, mask)
    res = acc.summarise()
    assert res["false_alarm_rate"] == pytest.approx(60.0)
    assert res["miss_rate"] == pytest.approx(25.0)
    assert res["image_auroc"] == pytest.approx(50.0)  # all image scores equal

    # Without a mask, the mask is score > threshold: strictly greater.
    acc = CategoryAccumulator(threshold=0.5)
    acc.add(np.full((2, 2), 0.5), np.zeros((2, 2)))
    acc.add(np.array([[0.51, 0.0], [0.0, 0.0]]), np.zeros((2, 2)))
    acc.add(np.full((2, 2), 0.2), np.eye(2))
    res = acc.summarise()
    assert res["false_alarm_rate"] == pytest.approx(50.0) and res["miss_rate"] == pytest.approx(100.0)
    assert res["image_auroc"] == pytest.approx(0.0)  # the anomalous image has the lowest maximum


def test_image_level_undefined_is_nan_not_zero() -> None:
    rng = np.random.default_rng(21)
    maps = [rng.random((5, 5)).astype(np.float32) for _ in range(3)]
    only_anomalous = feed(maps, [np.eye(5, dtype=np.uint8)] * 3).summarise()
    assert math.isnan(only_anomalous["image_auroc"]) and math.isnan(only_anomalous["false_alarm_rate"])
    assert only_anomalous["image_ap"] == pytest.approx(100.0) and only_anomalous["image_f1_max"] == pytest.approx(100.0)
    assert 0.0 <= only_anomalous["miss_rate"] <= 100.0
    only_normal = feed(maps, [np.zeros((5, 5), np.uint8)] * 3).summarise()
    for key in ("image_auroc", "image_ap", "image_f1_max", "miss_rate"):
        assert math.isnan(only_normal[key]), key
    assert only_normal["false_alarm_rate"] == pytest.approx(100 * np.mean([m.max() > 0.5 for m in maps]))
    nothing = CategoryAccumulator().summarise()
    assert all(math.isnan(nothing[k]) for k in IMAGE_METRIC_KEYS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mean = mean_over_categories({"a": only_anomalous, "n": only_normal})
    assert mean["image_ap"] == pytest.approx(100.0)  # the undefined category is skipped, not averaged as 0
    assert mean["false_alarm_rate"] == pytest.approx(only_normal["false_alarm_rate"])
    assert mean["skipped"]["image_auroc"] == ["a", "n"] and math.isnan(mean["image_auroc"])
    assert mean["skipped"]["miss_rate"] == ["n"]
    with pytest.raises(ValueError, match="empty"):
        CategoryAccumulator().add(np.zeros((0, 3)), np.zeros((0, 3)))


def test_image_level_survives_merging_in_order() -> None:
    rng = np.random.default_rng(22)
    scores, gts = random_images(rng, levels=4)
    whole, merged = feed(scores, gts), merged_one_by_one(scores, gts, "There is no anomaly.")
    a, b = whole.summarise(), merged.summarise()
    assert all(a[k] == b[k] for k in IMAGE_METRIC_KEYS)
    assert b["n_text"] == len(scores) and a["n_text"] == 0


# ---------------------------------------------------------------------------------------- text-mask agreement
CONTRADICTION = "The surface looks normal, without any defect; therefore no region is marked as anomalous."


def test_text_mask_agreement_per_category_and_pooled() -> None:
    z = np.zeros((4, 4), np.float32)
    normal = np.zeros((4, 4), np.uint8)
    gt = np.eye(4, dtype=np.uint8)
    empty, full = np.zeros((4, 4), bool), np.ones((4, 4), bool)
    a = CategoryAccumulator()
    a.add(z, normal, empty, "There is no anomaly to segment; the mask is empty.")  # agrees
    a.add(z, normal, full, CONTRADICTION)  # says normal, mask flags it: disagrees
    a.add(z, gt, full, "There is a small scratch near the center of the wood surface, as indicated by [SEG].")
    a.add(z, gt, empty, "Sure, it is [NOR][ANO][SEG].")  # undecidable, not scored
    res = a.summarise()
    assert res["text_mask_agreement"] == pytest.approx(100 * 2 / 3)
    assert (res["n_text"], res["n_text_undecidable"], res["n_text_agreeing"]) == (4, 1, 2)
    b = CategoryAccumulator()
    b.add(z, gt, full, "I can see a crack in the top part of the bottle.")
    with pytest.warns(UserWarning, match="false_alarm_rate: b"):  # b has no normal image
        mean = mean_over_categories({"a": res, "b": b.summarise()})
    assert mean["text_mask_agreement"] == pytest.approx(75.0)  # pooled over images: 3 of 4, not (66.7 + 100) / 2
    assert (mean["n_text"], mean["n_text_undecidable"]) == (5, 1)

    no_text = feed([z], [gt]).summarise()
    assert math.isnan(no_text["text_mask_agreement"]) and no_text["n_text_undecidable"] is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mean = mean_over_categories({"x": no_text})
    assert math.isnan(mean["text_mask_agreement"]) and mean["n_text_undecidable"] is None
    assert "text_mask_agreement" not in mean["skipped"]
    only_undecidable = CategoryAccumulator()
    only_undecidable.add(z, gt, full, "[NOR][ANO][SEG]")
    res = only_undecidable.summarise()
    assert math.isnan(res["text_mask_agreement"]) and res["n_text_undecidable"] == 1


def _answers(seed: int) -> list[tuple[str, str]]:
    """(expected verdict, answer) pairs exactly as the training templates write them for one seed."""
    rng = np.random.default_rng(seed)
    cls = ("wood", "weave", "grid", "round_parts", "dtd_cracked", "dtd_stained", "bottle", "metal_nut", None)[seed % 9]
    kind = ("scratch", "crack", "hole", "stain", "missing", "contamination", "fold", None)[seed % 8]
    meta = {"family": cls or "marble", "kind": kind, "location": ("center", "top-left", "bottom")[seed % 3],
            "area_fraction": float(rng.uniform(0.001, 0.3)), "n_regions": 1 + seed % 3,
            "colour": ("dark", "darker", "reddish", "darker and reddish", None)[seed % 5]}
    mask = np.zeros((32, 32), np.uint8)
    y, x = rng.integers(0, 26, 2)
    mask[y:y + 1 + seed % 6, x:x + 1 + seed % 4] = 1
    records = [record_from_metadata(meta, cls, seed=rng), record_from_mask(mask, cls, seed=rng),
               write_record(Facts(object="part", kind=kind), seed=rng)]
    out = []
    for record in records:
        out += [("anomalous", record.observation), ("anomalous", record.summary), ("anomalous", record.explanation)]
        for mode in ("describe", "describe-plus", "explain"):
            out.append(("anomalous", render(mode, record, rng, anomalous=True, cls_name=cls)[-1]["content"]))
    nor = normal_record(cls, texture=None if seed % 4 else bool(seed % 8), seed=rng)
    out += [("normal", nor.observation), ("normal", nor.summary), ("normal", nor.explanation)]
    for mode in ("describe", "describe-plus", "explain"):
        out.append(("normal", render(mode, None, rng, anomalous=False, cls_name=cls)[-1]["content"]))
    dialogue = render_multi_turn(None, rng, anomalous=False, cls_name=cls)
    out += [("normal", turn["content"]) for turn in dialogue[1::2]]
    return out


def test_text_verdict_on_the_training_answers() -> None:
    checked = 0
    for seed in range(300):
        for want, answer in _answers(seed):
            assert text_verdict(answer) == want, answer
            checked += 1
    assert checked > 5000
    for template in DIRECT_ANSWERS_NORMAL:
        assert text_verdict(template.format(anchors="[NOR][ANO][SEG]", object="bottle")) == "normal", template
    for template in DIRECT_ANSWERS:  # the direct answers mostly say nothing about the image
        assert text_verdict(template.format(anchors="[NOR][ANO][SEG]")) in (None, "anomalous"), template


@pytest.mark.parametrize(("text", "want"), [
    (CONTRADICTION, "normal"),
    ("Sure, it is [NOR][ANO][SEG].", None),
    ("[NOR][ANO][SEG]", None),
    ("", None),
    (None, None),
    ("The bottle is free of defects.", "normal"),
    ("A defect-free carpet, as indicated by [NOR][ANO][SEG].", "normal"),
    ("Nothing here looks anomalous.<|im_end|>", "normal"),
    ("The cracked texture looks normal everywhere.", "normal"),  # a class name, not a crack
    ("There is a thin scratch near the center of the wood surface, as indicated by [NOR][ANO][SEG].", "anomalous"),
    ("No anomaly is visible, but there is a small crack at the top.", "anomalous"),
    ("A normal tile has no holes or stains. Here, however, there is a hole in the top-left part.", "anomalous"),
    ("[NOR][ANO][SEG]. Because the structure is no longer intact, it is anomalous.", "anomalous"),
    ("The image shows two dark spots on the left.", "anomalous"),
    ("The pill is round and white.", None),
])
def test_text_verdict_hand_written(text: str | None, want: str | None) -> None:
    assert text_verdict(text) == want
