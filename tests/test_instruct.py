"""The five-field record schema and the rule writer's reading of masks and metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agvas.data.instruct import (
    FIELD_NAMES,
    InstructRecord,
    RecordError,
    facts_from_metadata,
    grid_location,
    mask_geometry,
    normal_record,
    object_name,
    read_records,
    record_from_mask,
    record_from_metadata,
    region_boxes,
    size_word,
)

FULL = {n: f"{n} text." for n in FIELD_NAMES}


# -- schema ----------------------------------------------------------------------------------


def test_round_trip_and_key_case() -> None:
    rec = InstructRecord.from_dict(FULL)
    assert rec.to_dict() == FULL
    lower = InstructRecord.from_dict({k.lower(): f"  {v} " for k, v in FULL.items()} | {"note": "extra"})
    assert lower == rec  # whitespace stripped, extra keys ignored


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({k: v for k, v in FULL.items() if k != "Diagnosis"}, "missing field.*Diagnosis"),
        ({k: v for k, v in FULL.items() if k not in ("Summary", "Explanation")}, "Summary, Explanation"),
        (FULL | {"Observation": "   "}, "'Observation' is empty"),
        (FULL | {"Summary": 3}, "'Summary' must be a string, got int"),
        (FULL | {"Expectation": None}, "'Expectation' must be a string, got NoneType"),
        (["not", "a", "dict"], "expected a JSON object"),
    ],
)
def test_schema_rejects_bad_records(raw: object, message: str) -> None:
    with pytest.raises(RecordError, match=message):
        InstructRecord.from_dict(raw)


def test_constructor_validates_too() -> None:
    with pytest.raises(RecordError, match="Explanation"):
        InstructRecord("a", "b", "c", "d", "")


def test_read_records_ignores_a_trailing_partial_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    line = json.dumps({"img_path": "a.png", "cls_name": "x", "record": FULL, "model": "m"})
    path.write_text(line + "\n" + '{"img_path": "b.png", "rec')
    assert list(read_records(path)) == ["a.png"]
    path.write_text("garbage\n" + line + "\n")
    with pytest.raises(RecordError, match=":1:"):
        read_records(path)


# -- geometry --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "col", "word"),
    [(0, 0, "top-left"), (0, 1, "top"), (0, 2, "top-right"), (1, 0, "left"), (1, 1, "center"),
     (1, 2, "right"), (2, 0, "bottom-left"), (2, 1, "bottom"), (2, 2, "bottom-right")],
)
def test_location_on_a_3x3_grid(row: int, col: int, word: str) -> None:
    mask = np.zeros((90, 120), np.uint8)
    mask[row * 30 + 10:row * 30 + 20, col * 40 + 15:col * 40 + 25] = 1
    g = mask_geometry(mask)
    assert g.location == word
    assert g.regions == 1 and g.bbox == (col * 40 + 15, row * 30 + 10, col * 40 + 25, row * 30 + 20)
    assert grid_location(row * 30 + 15, col * 40 + 20, 90, 120) == word


def test_area_and_size_words() -> None:
    mask = np.zeros((100, 100), np.uint8)
    mask[40:60, 40:60] = 1  # 4%
    g = mask_geometry(mask)
    assert g.area_fraction == pytest.approx(0.04) and g.size == "medium-sized"
    assert [size_word(a) for a in (0.001, 0.01, 0.05, 0.1, 0.5)] == [
        "tiny", "small", "medium-sized", "large", "very large"]


def test_elongation_and_orientation_from_second_moments() -> None:
    disk = np.zeros((101, 101), np.uint8)
    yy, xx = np.mgrid[:101, :101]
    disk[(yy - 50) ** 2 + (xx - 50) ** 2 <= 20 ** 2] = 1
    g = mask_geometry(disk)
    assert g.elongation == pytest.approx(1.0, abs=0.05) and g.shape == "roughly round" and g.orientation is None

    hline = np.zeros((100, 100), np.uint8)
    hline[48:51, 10:90] = 1
    g = mask_geometry(hline)
    assert g.elongation > 10 and g.shape == "thin, line-like" and g.orientation == "horizontal"

    vbar = np.zeros((100, 100), np.uint8)
    vbar[20:80, 45:65] = 1  # 3:1
    g = mask_geometry(vbar)
    assert g.elongation == pytest.approx(3.0, rel=0.05) and g.shape == "elongated" and g.orientation == "vertical"

    diag = np.eye(60, dtype=np.uint8)
    g = mask_geometry(diag)
    assert g.orientation == "diagonal" and g.shape == "thin, line-like"

    ring = disk.copy()
    ring[(yy - 50) ** 2 + (xx - 50) ** 2 <= 17 ** 2] = 0
    ring[:, :50] = 0  # half an annulus: not elongated, but far from filling its box
    assert mask_geometry(ring).shape in ("irregular", "elongated")


def test_connected_regions_are_counted_with_8_connectivity() -> None:
    mask = np.zeros((60, 60), np.uint8)
    mask[5:10, 5:10] = 1
    mask[30:35, 40:45] = 1
    mask[50:55, 10:15] = 1
    mask[10, 10] = 1  # touches the first square diagonally: still one region
    g = mask_geometry(mask)
    assert g.regions == 3
    assert len(region_boxes(mask)) == 3
    assert "top-left" in g.location and " and " in g.location


def test_empty_mask_has_no_geometry() -> None:
    with pytest.raises(ValueError, match="empty"):
        mask_geometry(np.zeros((8, 8), np.uint8))


# -- writer ----------------------------------------------------------------------------------


def test_record_from_mask_states_the_geometry() -> None:
    mask = np.zeros((90, 90), np.uint8)
    mask[5:8, 2:40] = 1  # thin line in the top-left cell
    rec = record_from_mask(mask, "metal_nut", seed=3)
    text = " ".join(rec.to_dict().values())
    assert "top-left" in rec.observation and "metal nut" in text
    assert "small" in rec.observation and "line-like" in rec.observation
    assert "1.4%" in text


def test_writer_is_deterministic_per_seed_and_varied_across_seeds() -> None:
    mask = np.zeros((64, 64), np.uint8)
    mask[40:50, 40:52] = 1
    assert record_from_mask(mask, "tile", seed=7) == record_from_mask(mask, "tile", seed=7)
    variants = {record_from_mask(mask, "tile", seed=s).observation for s in range(20)}
    assert len(variants) >= 3


def test_contrast_is_read_from_the_pixels() -> None:
    image = np.full((64, 64, 3), 200, np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[20:30, 20:30] = 1
    image[mask > 0] = 40
    rec = record_from_mask(mask, "tile", image=image, seed=0)
    assert "darker than its surroundings" in rec.observation


def test_record_from_metadata_uses_every_fact_and_key_aliases() -> None:
    meta = {"family": "texture", "kind": "scratch", "location": "top-left", "size": "small",
            "area": 0.012, "shape": "elongated", "colour": "dark", "regions": 1, "bbox": [1, 2, 3, 4]}
    rec = record_from_metadata(meta, "wood", seed=0)
    for word in ("scratch", "top-left", "small", "elongated", "dark", "wood"):
        assert word in rec.observation + rec.summary, word
    assert "continuity" in rec.diagnosis + rec.explanation  # the scratch family's reason
    assert "texture" in rec.expectation or "pattern" in rec.expectation or "homogeneous" in rec.expectation

    alias = facts_from_metadata({"defect_kind": "hole", "color": "black", "n_regions": 3, "area_fraction": 0.3})
    assert (alias.kind, alias.colour, alias.regions, alias.size) == ("hole", "black", 3, "very large")
    rec = record_from_metadata({"defect_kind": "hole", "color": "black", "n_regions": 3}, "hazelnut", seed=1)
    assert "3 " in rec.observation and "holes" in rec.observation


def test_record_from_a_synthetic_generators_metadata() -> None:
    """The keys the synthetic generator writes, as a plain dict (no import of its code)."""
    meta = {"family": "metal", "defect": "contamination", "anomaly": 1, "location": "top left",
            "area_fraction": 0.0048, "size": "tiny", "shape": "scattered", "colour": "darker and purplish",
            "n_regions": 4, "bbox": [32, 58, 49, 82],
            "regions": [{"location": "left", "area_px": 30, "bbox": [32, 58, 40, 66]}]}
    rec = record_from_metadata(meta, seed=2)
    assert "4 tiny scattered contamination spots in the top left part of the metal surface" in rec.observation
    assert "which look darker and purplish compared with their surroundings" in rec.observation
    assert "Together they cover about 0.5%" in rec.observation
    assert "texture" in rec.expectation or "pattern" in rec.expectation
    single = record_from_metadata(meta | {"n_regions": 1, "colour": "darker", "defect": "missing",
                                          "family": "round_parts"}, seed=0)
    assert "a tiny scattered missing region" in single.observation and "round part" in single.observation
    assert "which looks darker than its surroundings" in single.observation


def test_normal_record_says_there_is_no_anomaly() -> None:
    for seed in range(6):
        rec = normal_record("bottle", seed=seed)
        text = (rec.observation + rec.summary + rec.explanation).lower()
        assert "no anomaly" in text or "no defect" in text or "without any defect" in text
        assert "bottle" in rec.expectation


def test_object_names() -> None:
    assert object_name("metal_nut") == "metal nut"
    assert object_name("pcb1") == "pcb"
    assert object_name(None) == "object"
