"""The decision rule from P to mask and answer: the paper's default, a threshold, a minimum area."""

from __future__ import annotations

import numpy as np
import pytest

from agvas.infer.decision import Decision, calibrate_min_area
from agvas.infer.result import SegmentationResult


def result(p: np.ndarray, anchors: bool = True, text: str = "", mode: str = "direct") -> SegmentationResult:
    mask = p > 0.5
    return SegmentationResult(mask=mask, anomaly_map=p.astype(np.float32), seg_map=None, ano_map=None, text=text,
                              score=float(p.max()), anomalous=bool(mask.any()), mode=mode, anchors_found=anchors)


def test_default_is_the_papers_rule_and_min_area_clears_specks():
    p = np.zeros((10, 10), np.float32)
    p[0, 0] = 0.9  # one pixel: 1 % of the image
    assert Decision().mask(p).sum() == 1
    assert Decision(min_area=0.02).mask(p).sum() == 0
    assert Decision(min_area=0.01).mask(p).sum() == 1  # exactly the minimum stays
    assert Decision(threshold=0.95).mask(p).sum() == 0
    out = Decision(min_area=0.02).apply(result(p))
    assert not out.anomalous and not out.mask.any() and out.anomaly_map[0, 0] == pytest.approx(0.9)
    assert out.summary()["min_area"] == 0.02 and out.summary()["threshold"] == 0.5
    with pytest.raises(ValueError, match="min_area"):
        Decision(min_area=1.5)


def test_calibration_flags_at_most_the_asked_share_of_good_images():
    rng = np.random.default_rng(0)
    goods = []
    for k in range(10):  # image k has k flagged pixels out of 100
        p = np.zeros(100, np.float32)
        p[rng.permutation(100)[:k]] = 0.8
        goods.append(p.reshape(10, 10))
    min_area = calibrate_min_area(goods, false_alarm=0.2)
    flagged = [Decision(min_area=min_area).mask(p).any() for p in goods]
    assert sum(flagged) == 2 and flagged[-2:] == [True, True]
    assert calibrate_min_area(goods, false_alarm=0.0) > 0.09
    assert calibrate_min_area([np.zeros((4, 4))], false_alarm=0.0) == 0.0  # nothing to clear: the paper's rule


def test_segmenter_applies_a_call_decision_without_touching_the_maps(tiny_backbones):
    from model_fixtures import build

    from agvas.infer import Segmenter
    from agvas.model.config import preset_config

    seg = Segmenter(build(preset_config("tiny"), tiny_backbones), device="cpu")
    image = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    plain = seg.segment([image])[0]
    low = seg.segment([image], decision=Decision(threshold=0.0))[0]
    half = float(np.median(plain.anomaly_map))  # about half the pixels are above it
    strict = seg.segment([image], decision=Decision(threshold=half, min_area=0.9))[0]
    assert np.array_equal(plain.anomaly_map, low.anomaly_map)
    assert low.mask.all() and low.anomalous and low.threshold == 0.0
    assert not strict.mask.any() and not strict.anomalous and strict.min_area == 0.9


def _probe_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "probe_map_scores.py"
    spec = importlib.util.spec_from_file_location("probe_map_scores", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_probe_scores_rank_a_defect_above_a_hot_speck_only_where_they_should(capsys):
    """A defect is a hot 12x12 patch, a good image has one hot pixel: the max cannot tell them apart,
    the 8-px blur and the area can; categories without both kinds are left out of the mean."""
    probe = _probe_script()
    maps = np.full((4, 64, 64), 0.1, dtype=np.float32)
    maps[:2, 20:32, 20:32] = 0.9  # defective
    maps[2:, 5, 5] = 0.9  # good, one speck
    labels = np.array([True, True, False, False])
    scores = probe.image_scores(maps)
    categories = np.array(["a"] * 4)
    assert probe.per_category_auroc(labels, scores["max (the paper's)"], categories) == 50.0
    assert probe.per_category_auroc(labels, scores["max of 8-px box blur"], categories) == 100.0
    assert probe.per_category_auroc(labels, scores["area above 0.5"], categories) == 100.0
    with_good_only = np.concatenate([categories, ["b"]])
    assert probe.per_category_auroc(np.append(labels, False), np.append(scores["mean"], 0.0), with_good_only) == 100.0
    truths = np.zeros_like(maps, dtype=bool)
    truths[:2, 20:32, 20:32] = True
    good = np.full((6, 64, 64), 0.1, dtype=np.float32)
    good[:, 5, 5] = 0.9  # the speck sits where every good part has it: the reference clears it
    probe.reference_rule(good, maps, truths)
    first = capsys.readouterr().out.splitlines()[0]
    assert "false alarm 0 %, miss 0 %" in first


def test_flags_from_two_numbers_agree_with_the_mask():
    from agvas.infer.calibration import MapStats

    rng = np.random.default_rng(1)
    for _ in range(50):
        p = rng.random((12, 12)) ** rng.uniform(1, 12)  # from nearly empty to nearly full masks
        stats = MapStats.of(p)
        for decision in (Decision(), Decision(min_area=rng.uniform(0, 0.5)), Decision(threshold=rng.uniform(0.5, 1))):
            assert stats.flagged(decision) == bool(decision.mask(p).any())
    with pytest.raises(ValueError, match="threshold at 0.5"):
        stats.flagged(Decision(threshold=0.7, min_area=0.1))


def test_threshold_calibration_clears_all_but_the_allowed_share_and_never_loosens_the_paper():
    from agvas.infer.decision import calibrate_threshold

    goods = [np.full((4, 4), v, np.float32) for v in (0.55, 0.6, 0.7, 0.8, 0.95)]
    t = calibrate_threshold(goods, false_alarm=0.2)  # one of five may stay flagged: the 0.95
    assert t == pytest.approx(0.8)
    assert [Decision(threshold=t).mask(p).any() for p in goods] == [False] * 4 + [True]
    assert calibrate_threshold([np.full((2, 2), 0.1)], false_alarm=0.0) == 0.5  # already quiet: the paper's cut
    with pytest.raises(ValueError, match="P = 1"):
        calibrate_threshold([np.ones((2, 2))], false_alarm=0.0)
    with pytest.raises(ValueError, match="masked whole"):
        calibrate_min_area([np.ones((2, 2))], false_alarm=0.0)


def test_calibrate_reports_the_rule_on_held_out_good_and_defective_images():
    from agvas.infer.calibration import MapStats, calibrate

    def speck(share: float) -> MapStats:  # a map whose mask covers `share` of the image, peak 0.9
        return MapStats(peak=0.9 if share else 0.3, area=share)

    good = [speck(s) for s in (0.0, 0.01, 0.02, 0.03, 0.04)]
    holdout = [speck(0.015), speck(0.05)]
    defective = [speck(0.2), speck(0.01), speck(0.0)]
    cal = calibrate(good, "min-area", 0.2, holdout=holdout, defective=defective)
    assert 0.03 < cal.decision.min_area <= 0.04 and cal.decision.threshold == 0.5
    assert (cal.calibration.paper, cal.calibration.chosen) == (0.8, 0.2)
    assert (cal.holdout.images, cal.holdout.paper, cal.holdout.chosen) == (2, 1.0, 0.5)
    assert cal.defective.paper == pytest.approx(2 / 3) and cal.defective.chosen == pytest.approx(1 / 3)
    assert cal.flags() == f"--threshold 0.5 --min-area {cal.decision.min_area!r}"
    assert cal.as_dict()["decision"] == {"threshold": 0.5, "min_area": cal.decision.min_area}
    assert calibrate(good, "min-area", 0.2).holdout is None
    peaks = [MapStats(peak=v, area=0.1) for v in (0.6, 0.7, 0.9)]
    assert calibrate(peaks, "threshold", 0.34).decision == Decision(threshold=0.7)
    with pytest.raises(ValueError, match="rule must be one of"):
        calibrate(good, "area")
    with pytest.raises(ValueError, match="at least one good image"):
        calibrate([], "threshold")


def test_holdout_split_is_seeded_disjoint_and_keeps_one_on_each_side():
    from agvas.infer.calibration import split_holdout

    items = list(range(10))
    kept, out = split_holdout(items, 0.3, seed=4)
    assert len(out) == 3 and sorted(kept + out) == items and kept == sorted(kept)
    assert split_holdout(items, 0.3, seed=4) == (kept, out) and split_holdout(items, 0.3, seed=5) != (kept, out)
    assert [len(part) for part in split_holdout([1, 2], 0.9)] == [1, 1]
    assert split_holdout(items, 0.0) == (items, [])
    with pytest.raises(ValueError, match="at least 2"):
        split_holdout([1], 0.3)


def test_a_result_says_when_its_text_contradicts_its_mask():
    p = np.zeros((10, 10), np.float32)
    p[:2] = 0.9  # 20 % of the image
    said_normal = result(p, text="The part is without any defect. [NOR][ANO][SEG]", mode="explain")
    assert said_normal.anomalous and said_normal.text_verdict == "normal" and said_normal.text_agrees is False
    quiet = Decision(min_area=0.5).apply(said_normal)  # a stricter rule empties the mask: now they agree
    assert not quiet.anomalous and quiet.text_agrees is True and quiet.summary()["text_agrees"] is True
    said_hole = result(p, text="There is a small hole at the top. [NOR][ANO][SEG]", mode="describe")
    assert said_hole.text_verdict == "anomalous" and said_hole.text_agrees is True
    fixed = result(p, text="Sure, it is [NOR][ANO][SEG].")
    assert fixed.text_verdict is None and fixed.summary()["text_agrees"] is None
    assert result(p, text="Sure, it is [NOR][ANO][SEG].", mode="explain").text_agrees is None  # decides nothing
