"""The decision rule from P to mask and answer: the paper's default, a threshold, a minimum area."""

from __future__ import annotations

import numpy as np
import pytest

from agvas.infer.decision import Decision, calibrate_min_area
from agvas.infer.result import SegmentationResult


def result(p: np.ndarray, anchors: bool = True) -> SegmentationResult:
    mask = p > 0.5
    return SegmentationResult(mask=mask, anomaly_map=p.astype(np.float32), seg_map=None, ano_map=None, text="",
                              score=float(p.max()), anomalous=bool(mask.any()), mode="direct", anchors_found=anchors)


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
