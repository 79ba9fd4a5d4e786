"""Dataset converters: each publisher's layout in miniature, converted and read back through meta.json.

The trees are built file by file in the layouts the publishers ship, so a converter that only works on
an idealised layout fails here. Two real sets (CrackForest, Kvasir-SEG) are converted when present.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import typer
from PIL import Image
from typer.testing import CliRunner

from agvas.cli import data_prepare
from agvas.data.converters import CONVERTERS, LayoutError, NothingValidError, convert
from agvas.data.converters.base import (
    EMPTY_MASK,
    MISSING_MASK,
    NO_GROUND_TRUTH,
    SIZE_MISMATCH,
    UNREADABLE_IMAGE,
    UNREADABLE_MASK,
)
from agvas.data.meta import META_FILE, Entry, load_meta, load_sample
from agvas.io import read_mask

W, H = 24, 16
BOX = (slice(4, 10), slice(6, 15))  # rows, cols of the defect in every synthetic mask


# ---------------------------------------------------------------- building blocks


def put_image(path: Path, size: tuple[int, int] = (W, H), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def box_mask(size: tuple[int, int] = (W, H), value: int = 255) -> np.ndarray:
    m = np.zeros((size[1], size[0]), dtype=np.uint8)
    m[BOX] = value
    return m


def expected_mask(size: tuple[int, int] = (W, H)) -> np.ndarray:
    return (box_mask(size) > 0).astype(np.uint8)


def put_mask(path: Path, array: np.ndarray | None = None, **save: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(box_mask() if array is None else array).save(path, **save)
    return path


def put_jpeg_mask(path: Path) -> Path:
    """A JPEG mask with soft grey edges, as Kvasir and RSDD ship them."""
    m = box_mask().astype(np.float32)
    m[BOX[0].start - 1, BOX[1]] = 90  # a faint fringe above the box, below the 128 threshold
    return put_mask(path, m.astype(np.uint8), quality=95)


def all_entries(root: Path, split: str = "test") -> list[Entry]:
    return [e for es in load_meta(root, split).values() for e in es]


def no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob("*.tmp")] if root.exists() else True


def check_mask(root: Path, entry: Entry) -> None:
    sample = load_sample(root, entry)
    assert sample.image.shape == (H, W, 3)
    if entry.anomaly:
        np.testing.assert_array_equal(sample.mask, expected_mask())
        raw = np.asarray(Image.open(root / entry.mask_path))
        assert set(np.unique(raw)) <= {0, 255}, f"{entry.mask_path} is not a 0/255 mask"
    else:
        assert entry.mask_path == "" and not sample.mask.any()


# ---------------------------------------------------------------- one test per publisher layout


def test_mvtec(tmp_path: Path) -> None:
    src, dst = tmp_path / "mvtec", tmp_path / "out"
    for cls in ("bottle", "cable"):
        for i in range(2):
            put_image(src / cls / "train" / "good" / f"{i:03d}.png")
        put_image(src / cls / "test" / "good" / "000.png")
        for defect in ("broken_large", "crack"):
            put_image(src / cls / "test" / defect / "000.png")
            put_mask(src / cls / "ground_truth" / defect / "000_mask.png")
    (src / "license.txt").write_text("not a class")

    report = convert("mvtec", src, dst)
    test, train = load_meta(dst, "test"), load_meta(dst, "train")
    assert sorted(test) == sorted(train) == ["bottle", "cable"]
    assert [len(train[c]) for c in train] == [2, 2]
    assert not any(e.anomaly for es in train.values() for e in es)
    bottle = {e.img_path: e for e in test["bottle"]}
    assert bottle["bottle/test/good/000.png"].anomaly == 0
    crack = bottle["bottle/test/crack/000.png"]
    assert (crack.anomaly, crack.specie_name) == (1, "crack")
    # 0/255 PNG masks are usable as they are: linked, not rewritten
    assert crack.mask_path == "bottle/ground_truth/crack/000_mask.png"
    assert (dst / crack.mask_path).is_symlink() and (dst / crack.img_path).is_symlink()
    for entry in all_entries(dst):
        check_mask(dst, entry)
    assert report.skipped == []


def test_mvtec_single_class_folder(tmp_path: Path) -> None:
    src = tmp_path / "screw"
    put_image(src / "test" / "good" / "000.png")
    put_image(src / "test" / "thread" / "000.png")
    put_mask(src / "ground_truth" / "thread" / "000_mask.png")
    convert("mvtec", src, tmp_path / "out")
    assert {e.cls_name for e in all_entries(tmp_path / "out")} == {"screw"}


def test_visa(tmp_path: Path) -> None:
    src, dst = tmp_path / "VisA", tmp_path / "out"
    rows = ["object,split,label,image,mask"]
    for i in range(2):
        rel = f"candle/Data/Images/Normal/{i:04d}.JPG"
        put_image(src / rel, seed=i)
        rows.append(f"candle,{'train' if i == 0 else 'test'},normal,{rel},")
    img, msk = "candle/Data/Images/Anomaly/000.JPG", "candle/Data/Masks/Anomaly/000.png"
    put_image(src / img)
    put_mask(src / msk, box_mask(value=2))  # VisA masks are label maps: 0 and the defect's label
    rows.append(f"candle,test,anomaly,{img},{msk}")
    (src / "split_csv").mkdir(parents=True)
    (src / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")

    convert("visa", src, dst)
    assert [e.img_path for e in all_entries(dst, "train")] == ["candle/Data/Images/Normal/0000.JPG"]
    test = all_entries(dst)
    assert sorted(e.anomaly for e in test) == [0, 1]
    bad = next(e for e in test if e.anomaly)
    assert bad.mask_path == "masks/candle/Data/Masks/Anomaly/000.png"  # binarised, so rewritten
    for entry in test:
        check_mask(dst, entry)


def test_ksdd2(tmp_path: Path) -> None:
    src, dst = tmp_path / "KolektorSDD2", tmp_path / "out"
    put_image(src / "train" / "10000.png")
    put_mask(src / "train" / "10000_GT.png", np.zeros((H, W), np.uint8))
    put_image(src / "test" / "20000.png")
    put_mask(src / "test" / "20000_GT.png")
    put_image(src / "test" / "20001.png")
    put_mask(src / "test" / "20001_GT.png", np.zeros((H, W), np.uint8))

    convert("ksdd2", src, dst)
    train, test = all_entries(dst, "train"), all_entries(dst)
    assert [(e.img_path, e.anomaly) for e in train] == [("train/10000.png", 0)]
    assert [(e.img_path, e.anomaly, e.specie_name) for e in test] == [
        ("test/20000.png", 1, "defect"), ("test/20001.png", 0, "good")]
    for entry in test:
        check_mask(dst, entry)


def test_rsdd(tmp_path: Path) -> None:
    src, dst = tmp_path / "RSDDs dataset", tmp_path / "out"
    for kind, n in (("I", 2), ("II", 1)):
        root = src / f"Type-{kind} RSDDs dataset"
        for i in range(n):
            put_image(root / "Rail surface images" / f"rail_{i}.jpg")
            put_jpeg_mask(root / "GroundTruth" / f"rail_{i}.jpg")

    convert("rsdd", src, dst)
    meta = load_meta(dst)
    assert {c: len(es) for c, es in meta.items()} == {"rail_type_i": 2, "rail_type_ii": 1}
    for entry in all_entries(dst):
        assert entry.anomaly == 1
        check_mask(dst, entry)


def test_isic(tmp_path: Path) -> None:
    src, dst = tmp_path / "isic2017", tmp_path / "out"
    data, truth = src / "ISIC-2017_Test_v2_Data", src / "ISIC-2017_Test_v2_Part1_GroundTruth"
    for i in (1, 2):
        put_image(data / f"ISIC_000000{i}.jpg")
        put_mask(truth / f"ISIC_000000{i}_segmentation.png")
    put_image(data / "ISIC_0000001_superpixels.png")  # shipped beside the images, not an image of the set
    (data / "ISIC-2017_Test_v2_Data_metadata.csv").write_text("image_id,age\n")

    convert("isic", src, dst)
    test = all_entries(dst)
    assert [e.img_path for e in test] == [f"ISIC-2017_Test_v2_Data/ISIC_000000{i}.jpg" for i in (1, 2)]
    assert {e.cls_name for e in test} == {"isic"} and all(e.anomaly for e in test)
    for entry in test:
        check_mask(dst, entry)


@pytest.mark.parametrize(
    ("name", "image_dir", "mask_dir", "suffix"),
    [("colondb", "images", "masks", ".png"), ("clinicdb", "Original", "Ground Truth", ".tif"),
     ("clinicdb", "images", "masks", ".png")],
)
def test_cvc(tmp_path: Path, name: str, image_dir: str, mask_dir: str, suffix: str) -> None:
    src, dst = tmp_path / "CVC", tmp_path / "out"
    for i in (1, 2):
        put_image(src / image_dir / f"{i}{suffix}")
        put_mask(src / mask_dir / f"{i}{suffix}")
    convert(name, src, dst)
    test = all_entries(dst)
    assert len(test) == 2 and {e.cls_name for e in test} == {name} and all(e.anomaly for e in test)
    for entry in test:
        check_mask(dst, entry)


def test_mtd(tmp_path: Path) -> None:
    src, dst = tmp_path / "Magnetic-Tile-Defect", tmp_path / "out"
    for defect in ("Blowhole", "Crack"):
        put_image(src / f"MT_{defect}" / "Imgs" / "exp1_num_1.jpg")
        put_mask(src / f"MT_{defect}" / "Imgs" / "exp1_num_1.png")
    put_image(src / "MT_Free" / "Imgs" / "exp2_num_9.jpg")
    put_mask(src / "MT_Free" / "Imgs" / "exp2_num_9.png", np.zeros((H, W), np.uint8))

    convert("mtd", src, dst)
    test = all_entries(dst)
    assert {e.cls_name for e in test} == {"magnetic_tile"}
    assert sorted((e.specie_name, e.anomaly) for e in test) == [("blowhole", 1), ("crack", 1), ("good", 0)]
    for entry in test:
        check_mask(dst, entry)


def put_crackforest_mat(path: Path, labels: np.ndarray) -> None:
    """The publisher's struct: groundTruth (1x1 struct) with Segmentation and Boundaries."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"groundTruth": {"Segmentation": labels, "Boundaries": labels > 1}})


def test_crackforest(tmp_path: Path) -> None:
    src, dst = tmp_path / "CrackForest", tmp_path / "out"
    for n in ("001", "002", "003"):
        put_image(src / "image" / f"{n}.jpg")
    seg = (box_mask() > 0).astype(np.uint8) + 1  # 1 road, 2 crack
    put_crackforest_mat(src / "groundTruth" / "001.mat", seg)
    enclosed = seg.copy()
    enclosed[0, 0] = 3  # road enclosed by cracks, which some published maps label 3: not crack
    put_crackforest_mat(src / "groundTruth" / "002.mat", enclosed)
    put_image(src / "image" / "004.jpg")
    (src / "groundTruth" / "004.mat").write_bytes(b"MATLAB 5.0 MAT-file, but cut short")
    put_image(src / "image" / "005.jpg")
    put_crackforest_mat(src / "groundTruth" / "005.mat", seg.T)  # transposed: the size differs

    report = convert("crackforest", src, dst)
    test = all_entries(dst)
    assert [e.img_path for e in test] == ["image/001.jpg", "image/002.jpg"]
    assert test[0].mask_path == "masks/groundTruth/001.png"
    for entry in test:
        assert entry.anomaly == 1
        check_mask(dst, entry)
    assert [(Path(s.path).name, s.reason) for s in report.skipped] == [
        ("003.jpg", NO_GROUND_TRUTH), ("004.mat", UNREADABLE_MASK), ("005.mat", SIZE_MISMATCH)]


def test_kvasir(tmp_path: Path) -> None:
    src, dst = tmp_path / "kvasir-seg", tmp_path / "out"
    for name in ("cju0qkwl35piu0993l0dewei2", "cju0qoxqj9q6s0835b43399p4"):
        put_image(src / "images" / f"{name}.jpg")
        put_jpeg_mask(src / "masks" / f"{name}.jpg")
    convert("kvasir", src, dst)
    test = all_entries(dst)
    assert len(test) == 2 and all(e.anomaly and e.cls_name == "kvasir" for e in test)
    assert all(e.mask_path.startswith("masks/masks/") and e.mask_path.endswith(".png") for e in test)
    for entry in test:
        check_mask(dst, entry)


def test_folder_with_masks(tmp_path: Path) -> None:
    src, dst = tmp_path / "my_parts", tmp_path / "out"
    for stem, mask_name in (("a", "a_mask.png"), ("b", "b_GT.png"), ("c", "c_segmentation.png"),
                            ("d", "d.png")):
        put_image(src / "images" / f"{stem}.png")
        put_mask(src / "masks" / mask_name)
    put_image(src / "images" / "e.png")
    put_mask(src / "masks" / "e.png", np.zeros((H, W), np.uint8))  # empty mask: a normal image
    put_image(src / "images" / "f.png")  # no mask at all

    report = convert("folder", src, dst)
    test = load_meta(dst)
    assert list(test) == ["my_parts"]
    assert [(Path(e.img_path).stem, e.anomaly) for e in test["my_parts"]] == [
        ("a", 1), ("b", 1), ("c", 1), ("d", 1), ("e", 0)]
    assert [(Path(s.path).name, s.reason) for s in report.skipped] == [("f.png", MISSING_MASK)]
    assert "f.png" in report.skipped[0].detail
    for entry in test["my_parts"]:
        check_mask(dst, entry)

    report = convert("folder", src, tmp_path / "out2", cls_name="part", missing_mask="normal")
    entries = all_entries(tmp_path / "out2")
    assert report.skipped == [] and {e.cls_name for e in entries} == {"part"}
    assert [(Path(e.img_path).stem, e.anomaly) for e in entries][-1] == ("f", 0)


def test_folder_without_masks_is_all_normal(tmp_path: Path) -> None:
    src = tmp_path / "good_parts"
    for i in range(3):
        put_image(src / "images" / f"{i}.jpg")
    convert("folder", src, tmp_path / "out")
    entries = all_entries(tmp_path / "out")
    assert len(entries) == 3 and not any(e.anomaly for e in entries)


def test_every_converter_is_covered() -> None:
    assert set(CONVERTERS) == {"mvtec", "visa", "ksdd2", "rsdd", "isic", "colondb", "clinicdb", "mtd",
                               "crackforest", "kvasir", "folder"}


# ---------------------------------------------------------------- robustness


def broken_kvasir(tmp_path: Path) -> Path:
    """A Kvasir tree with one good pair and one of each problem."""
    src = tmp_path / "broken"
    put_image(src / "images" / "good.jpg")
    put_jpeg_mask(src / "masks" / "good.jpg")
    (src / "images").joinpath("corrupt.jpg").write_bytes(b"this is not a jpeg")
    put_jpeg_mask(src / "masks" / "corrupt.jpg")
    put_image(src / "images" / "bigger.jpg", size=(W + 8, H))
    put_jpeg_mask(src / "masks" / "bigger.jpg")
    put_image(src / "images" / "lonely.jpg")
    put_image(src / "images" / "badmask.jpg")
    (src / "masks").joinpath("badmask.jpg").write_bytes(b"\xff\xd8 truncated")
    put_image(src / "images" / "blank.jpg")
    put_mask(src / "masks" / "blank.jpg", np.zeros((H, W), np.uint8))
    return src


def test_bad_files_are_named_skipped_and_the_rest_converts(tmp_path: Path) -> None:
    dst = tmp_path / "out"
    report = convert("kvasir", broken_kvasir(tmp_path), dst)
    assert [e.img_path for e in all_entries(dst)] == ["images/good.jpg"]
    reasons = {Path(s.path).stem: (s.reason, s.detail) for s in report.skipped}
    assert {k: r for k, (r, _) in reasons.items()} == {
        "corrupt": UNREADABLE_IMAGE, "bigger": SIZE_MISMATCH, "lonely": MISSING_MASK,
        "badmask": UNREADABLE_MASK, "blank": EMPTY_MASK}
    for stem, (_, detail) in reasons.items():
        assert f"{stem}.jpg" in detail
    assert f"is {W}x{H}" in reasons["bigger"][1] and f"is {W + 8}x{H}" in reasons["bigger"][1]
    assert no_temp_files(dst)


def test_verify_images_catches_truncated_files(tmp_path: Path) -> None:
    src = tmp_path / "parts"
    put_image(src / "images" / "ok.png")
    full = put_image(src / "images" / "cut.png", size=(200, 200))
    full.write_bytes(full.read_bytes()[:300])  # header intact, pixels missing
    convert("folder", src, tmp_path / "fast")  # header only: the cut file passes
    assert len(all_entries(tmp_path / "fast")) == 2
    report = convert("folder", src, tmp_path / "slow", verify_images=True)
    assert [(Path(s.path).name, s.reason) for s in report.skipped] == [("cut.png", UNREADABLE_IMAGE)]


def test_nothing_valid_writes_no_meta(tmp_path: Path) -> None:
    src, dst = tmp_path / "kvasir", tmp_path / "out"
    (src / "images").mkdir(parents=True)
    (src / "images" / "x.jpg").write_bytes(b"garbage")
    put_jpeg_mask(src / "masks" / "x.jpg")
    with pytest.raises(NothingValidError, match="no meta.json was written"):
        convert("kvasir", src, dst)
    assert not (dst / META_FILE).exists() and no_temp_files(dst)


def test_layout_errors_name_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="does not exist"):
        convert("kvasir", tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayoutError, match=r"no image/ folder .*image/NNN.jpg \+ groundTruth/NNN.mat"):
        convert("crackforest", tmp_path / "empty", tmp_path / "out")
    with pytest.raises(LayoutError, match="split_csv/1cls.csv"):
        convert("visa", tmp_path / "empty", tmp_path / "out")
    with pytest.raises(LayoutError, match="MT_"):
        convert("mtd", tmp_path / "empty", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_meta_is_never_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, dst = tmp_path / "parts", tmp_path / "out"
    put_image(src / "images" / "a.png")
    put_mask(src / "masks" / "a.png")  # 0/255 PNG: linked, so meta.json is the only file written

    def crash(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("agvas.io.os.fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        convert("folder", src, dst)
    assert not (dst / META_FILE).exists() and no_temp_files(dst)
    monkeypatch.undo()
    convert("folder", src, dst)
    assert len(all_entries(dst)) == 1 and no_temp_files(dst)


def test_rerun_and_in_place(tmp_path: Path) -> None:
    src = tmp_path / "kvasir"
    put_image(src / "images" / "a.jpg")
    put_jpeg_mask(src / "masks" / "a.jpg")
    convert("kvasir", src, tmp_path / "out")
    convert("kvasir", src, tmp_path / "out")  # again over its own links and masks
    assert len(all_entries(tmp_path / "out")) == 1 and no_temp_files(tmp_path / "out")

    convert("kvasir", src, src)  # DST is SRC: the image stays where it is, no link to itself
    entry = all_entries(src)[0]
    assert entry.img_path == "images/a.jpg" and not (src / entry.img_path).is_symlink()
    assert (src / "masks" / "a.jpg").is_file()  # the source mask is untouched
    check_mask(src, entry)


def test_copy_mode(tmp_path: Path) -> None:
    src = tmp_path / "kvasir"
    put_image(src / "images" / "a.jpg")
    put_jpeg_mask(src / "masks" / "a.jpg")
    convert("kvasir", src, tmp_path / "out", link="copy")
    assert not (tmp_path / "out" / "images" / "a.jpg").is_symlink()
    check_mask(tmp_path / "out", all_entries(tmp_path / "out")[0])


# ---------------------------------------------------------------- the command


def cli_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _group() -> None:
        """Keeps `prepare` a sub-command, as under `agvas data`."""

    data_prepare.register(app)
    return app


def run_cli(*args: str | os.PathLike) -> tuple[int, str]:
    result = CliRunner().invoke(cli_app(), [str(a) for a in args], env={"COLUMNS": "400"})
    return result.exit_code, result.output


def test_cli_exit_codes(tmp_path: Path) -> None:
    src = tmp_path / "kvasir"
    put_image(src / "images" / "a.jpg")
    put_jpeg_mask(src / "masks" / "a.jpg")
    code, out = run_cli("prepare", "kvasir", src, tmp_path / "ok")
    assert code == 0, out
    assert "kvasir" in out and (tmp_path / "ok" / META_FILE).exists()

    code, out = run_cli("prepare", "kvasir", broken_kvasir(tmp_path), tmp_path / "partial")
    assert code == 1, out
    for name in ("corrupt.jpg", "bigger.jpg", "lonely.jpg", "badmask.jpg", "blank.jpg"):
        assert name in out
    assert len(all_entries(tmp_path / "partial")) == 1

    code, out = run_cli("prepare", "crackforest", src, tmp_path / "wrong")
    assert code == 2 and "CrackForest ships" in out and not (tmp_path / "wrong").exists()

    code, out = run_cli("prepare", "nosuchset", src, tmp_path / "x")
    assert code == 2 and "unknown dataset" in out

    code, out = run_cli("prepare", "--help")
    assert code == 0 and "Exit codes" in out


# ---------------------------------------------------------------- the real sets


@pytest.fixture(scope="module")
def crackforest(shared_data: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("crackforest")
    convert("crackforest", Path(shared_data) / "crackforest", dst)
    return dst


def test_real_crackforest(crackforest: Path) -> None:
    test = load_meta(crackforest)
    assert list(test) == ["crackforest"] and len(test["crackforest"]) == 118
    fractions = np.array([read_mask(crackforest / e.mask_path).mean() for e in test["crackforest"]])
    assert fractions.min() > 0.001 and fractions.max() < 0.15
    assert 0.005 < fractions.mean() < 0.05
    check = load_sample(crackforest, test["crackforest"][0])  # one full round trip, image included
    assert check.image.shape[:2] == check.mask.shape


def test_real_kvasir(shared_data: str, tmp_path: Path) -> None:
    report = convert("kvasir", Path(shared_data) / "kvasir-seg", tmp_path)
    entries = all_entries(tmp_path)
    assert len(entries) == 998 and report.skipped == []
    assert all(e.anomaly == 1 and e.cls_name == "kvasir" for e in entries)
    for entry in entries:  # masks only: 998 small PNGs read in well under a second
        raw = np.asarray(Image.open(tmp_path / entry.mask_path))
        assert raw.shape == (256, 256) and set(np.unique(raw)) <= {0, 255} and raw.any()


def test_crackforest_images_without_ground_truth_do_not_fail_the_run(shared_data: str, tmp_path: Path) -> None:
    """CrackForest ships 37 images without GT by design: reported, exit code 0, files readable by all."""
    code, out = run_cli("prepare", "crackforest", Path(shared_data) / "crackforest", tmp_path / "cf")
    assert code == 0, out
    assert "no ground truth" in out
    assert (tmp_path / "cf" / META_FILE).stat().st_mode & 0o044 == 0o044


# ---------------------------------------------------------------- hostile files (issue 12)


def test_a_decompression_bomb_is_skipped_and_counted(tmp_path: Path) -> None:
    from hostile_files import bomb_png

    src = tmp_path / "parts"
    put_image(src / "images" / "good.png")
    bomb_png(src / "images" / "bomb.png")
    code, out = run_cli("prepare", "folder", src, tmp_path / "out")
    assert code == 1, out  # partial: the bomb is named and skipped, the good image converted
    assert "bomb.png" in out and "too large" in out and "Traceback" not in out
    assert [e.img_path for e in all_entries(tmp_path / "out")] == ["images/good.png"]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_max_pixels_is_read_from_the_header(tmp_path: Path) -> None:
    from hostile_files import png_claiming

    src = tmp_path / "parts"
    put_image(src / "images" / "good.png")
    png_claiming(src / "images" / "huge.png", 12000, 12000)  # under Pillow's limit, over ours
    report = convert("folder", src, tmp_path / "out")
    [skip] = report.skipped
    assert skip.reason == UNREADABLE_IMAGE and "12000x12000 = 144,000,000 pixels" in skip.detail
    assert "--max-pixels" in skip.detail
    code, out = run_cli("prepare", "folder", src, tmp_path / "out2", "--max-pixels", str(W * H))
    assert code == 1 and "huge.png" in out and len(all_entries(tmp_path / "out2")) == 1


def test_a_failed_run_leaves_dst_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agvas.data.converters import pipeline

    src, dst = tmp_path / "kvasir", tmp_path / "out"
    for name in ("a", "b", "c"):
        put_image(src / "images" / f"{name}.jpg")
        put_jpeg_mask(src / "masks" / f"{name}.jpg")
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    calls = []
    real = pipeline._write_mask_png

    def failing(path: Path, *args: object) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        real(path, *args)

    monkeypatch.setattr(pipeline, "_write_mask_png", failing)
    with pytest.raises(OSError, match="disk full"):
        convert("kvasir", src, dst, workers=1)
    assert sorted(p.name for p in dst.rglob("*")) == ["keep.txt"]  # no link, mask or folder left over


def test_a_failed_rerun_restores_what_it_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agvas.data.converters import pipeline

    src, dst = tmp_path / "kvasir", tmp_path / "out"
    for name in ("a", "b"):
        put_image(src / "images" / f"{name}.jpg")
        put_jpeg_mask(src / "masks" / f"{name}.jpg")
    convert("kvasir", src, dst)
    before = {p.relative_to(dst): (p.is_symlink(), p.read_bytes()) for p in dst.rglob("*") if p.is_file()}
    (dst / "masks" / "masks" / "a.png").write_bytes(b"an older mask")  # a rerun rewrites this one
    before[Path("masks/masks/a.png")] = (False, b"an older mask")

    def failing(path: Path, *args: object) -> None:
        if path.name == "b.png":
            raise OSError("disk full")
        real(path, *args)

    real = pipeline._write_mask_png
    monkeypatch.setattr(pipeline, "_write_mask_png", failing)
    with pytest.raises(OSError, match="disk full"):
        convert("kvasir", src, dst, workers=1)
    after = {p.relative_to(dst): (p.is_symlink(), p.read_bytes()) for p in dst.rglob("*") if p.is_file()}
    assert after == before and no_temp_files(dst)


def test_folder_missing_mask_message_names_the_flag(tmp_path: Path) -> None:
    src = tmp_path / "parts"
    put_image(src / "images" / "a.png")
    put_image(src / "images" / "b.png")
    put_mask(src / "masks" / "a.png")
    code, out = run_cli("prepare", "folder", src, tmp_path / "out")
    assert code == 1 and "--missing-mask normal" in out and "missing_mask=" not in out


def test_a_folder_named_like_an_image_is_named_once(tmp_path: Path) -> None:
    src = tmp_path / "parts"
    put_image(src / "images" / "a.png")
    (src / "images" / "y.png").mkdir()
    code, out = run_cli("prepare", "folder", src, tmp_path / "out")
    assert code == 1, out
    assert out.count("y.png") == 1 and "folder" in out.split("y.png")[1][:60]
