"""Small trees in each training source's published layout, for tests/test_sources.py.

Every tree holds a few good files and, on purpose, a few bad ones (truncated image, missing mask,
malformed annotation line) so that the readers' naming and counting of bad files is exercised.
`build_all(base)` makes them all under `base` with the folder names `configs/llava-ov-7b.yaml` uses
after its `/PATH/TO/` placeholder.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from agvas.data.meta import Entry, write_meta

S = 48


def img(path: Path, seed: int, size: tuple[int, int] = (S, S)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def mask(path: Path, box: tuple[int, int, int, int] = (10, 10, 30, 30), size: tuple[int, int] = (S, S)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size[1], size[0]), np.uint8)
    x0, y0, x1, y1 = box
    arr[y0:y1, x0:x1] = 255
    Image.fromarray(arr).save(path)
    return path


def truncated(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return path


def write_json(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


# --- anomaly sets -------------------------------------------------------------------------------

def real_iad(root: Path) -> Path:
    cat = root / "realiad_1024" / "audiojack"
    items = {"train": [], "test": []}
    for i in range(3):
        p = f"OK/S{i:04d}/audiojack_{i:04d}_OK_C1_20231021.jpg"
        img(cat / p, i)
        items["train"].append({"category": "audiojack", "anomaly_class": "OK", "image_path": p, "mask_path": None})
        c2 = f"OK/S{i:04d}/audiojack_{i:04d}_OK_C2_20231021.jpg"  # another view: not read with views [C1]
        img(cat / c2, 10 + i)
        items["train"].append({"category": "audiojack", "anomaly_class": "OK", "image_path": c2, "mask_path": None})
    for i in range(3, 6):
        p = f"NG/HS/S{i:04d}/audiojack_{i:04d}_NG_HS_C1_20231021.jpg"
        img(cat / p, i)
        mask(cat / p.replace(".jpg", ".png"))
        items["test"].append({"category": "audiojack", "anomaly_class": "HS", "image_path": p,
                              "mask_path": p.replace(".jpg", ".png")})
    bad = "NG/AK/S0009/audiojack_0009_NG_AK_C1_20231021.jpg"  # truncated image
    truncated(cat / bad)
    mask(cat / bad.replace(".jpg", ".png"))
    items["test"].append({"category": "audiojack", "anomaly_class": "AK", "image_path": bad,
                          "mask_path": bad.replace(".jpg", ".png")})
    nomask = "NG/AK/S0010/audiojack_0010_NG_AK_C1_20231021.jpg"  # mask missing on disk
    img(cat / nomask, 99)
    items["test"].append({"category": "audiojack", "anomaly_class": "AK", "image_path": nomask,
                          "mask_path": nomask.replace(".jpg", ".png")})
    write_json(root / "realiad_jsons" / "realiad_jsons" / "audiojack.json",
               {"meta": {"prefix": "", "normal_class": "OK", "pre_transform": None}, **items})
    return root


def mvtec_style(root: Path, cat: str, kind: str, mask_suffix: str, ext: str = ".jpg") -> Path:
    for i in range(3):
        img(root / cat / "train" / "good" / f"{i:03d}{ext}", i)
    img(root / cat / "test" / "good" / f"100{ext}", 100)
    for i in range(3):
        img(root / cat / "test" / kind / f"{i:03d}{ext}", 200 + i)
        mask(root / cat / "ground_truth" / kind / f"{i:03d}{mask_suffix}")
    img(root / cat / "test" / kind / f"009{ext}", 209)  # no mask: bad at index time
    truncated(root / cat / "test" / kind / f"008{ext}")  # truncated: bad when loaded
    mask(root / cat / "ground_truth" / kind / f"008{mask_suffix}")
    return root


def zju_leaper(root: Path) -> Path:
    ids = {"normal": {"train": ["000001", "000002"], "test": ["000003"]},
           "defect": {"train": ["000004", "000005", "000006"], "test": ["000007"]}}
    for kind in ids.values():
        for iid in kind["train"] + kind["test"]:
            img(root / "Images" / f"{iid}.jpg", int(iid))
            (root / "Annotations" / "xmls").mkdir(parents=True, exist_ok=True)
            defective = int(iid) >= 4
            pattern = 1 + int(iid) % 2
            (root / "Annotations" / "xmls" / f"{iid}.xml").write_text(
                f"<annotation><pattern>{pattern}</pattern><defective>{int(defective)}</defective></annotation>")
            if defective and iid != "000006":  # 000006: defective without a mask
                mask(root / "Annotations" / "masks" / f"{iid}.png")
    write_json(root / "ImageSets" / "total.json", ids)
    return root


# --- general segmentation (LISA's dataset dir) --------------------------------------------------

def label_map(path: Path, values: list[int], mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((S, S), np.uint8)
    for k, v in enumerate(values):
        arr[:, k * S // len(values):(k + 1) * S // len(values)] = v
    if mode == "P":  # Mapillary's label maps: palette images whose index is the class
        im = Image.new("P", (S, S))
        im.putdata(arr.ravel().tolist())
        im.putpalette([c for i in range(256) for c in (i, 255 - i, (7 * i) % 256)])
    else:
        im = Image.fromarray(arr)
    im.save(path)
    return path


def ade20k(root: Path) -> Path:
    (root).mkdir(parents=True, exist_ok=True)
    (root / "objectInfo150.csv").write_text(
        "Idx,Ratio,Train,Val,Name\n1,0.1,1,1,wall\n2,0.1,1,1,building;edifice\n3,0.1,1,1,sky\n"
        "4,0.1,1,1,floor;flooring\n5,0.1,1,1,tree\n")
    for i in range(3):
        img(root / "images" / "training" / f"ADE_train_{i:08d}.jpg", i)
        label_map(root / "annotations" / "training" / f"ADE_train_{i:08d}.png", [0, 1, 5])
    label_map(root / "annotations" / "training" / "ADE_train_00000009.png", [1])  # its image is missing
    return root


def cocostuff(lisa: Path) -> Path:
    root = lisa / "cocostuff"
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.txt").write_text("0: unlabeled\n1: person\n2: bicycle\n3: car\n")
    for i in range(3):
        img(lisa / "coco" / "train2017" / f"{i:012d}.jpg", i)
        label_map(root / "train2017" / f"{i:012d}.png", [0, 2, 255])
    truncated(lisa / "coco" / "train2017" / f"{7:012d}.jpg")
    label_map(root / "train2017" / f"{7:012d}.png", [0, 1])
    return root


def mapillary(root: Path) -> Path:
    write_json(root / "config_v2.0.json", {"labels": [
        {"name": "construction--flat--road", "readable": "Road"},
        {"name": "nature--vegetation", "readable": "Vegetation"},
        {"name": "void--unlabeled", "readable": "Unlabeled"}]})
    for i in range(3):
        img(root / "training" / "images" / f"img{i}.jpg", i)
        label_map(root / "training" / "v2.0" / "labels" / f"img{i}.png", [0, 1, 2], mode="P")
    return root


def rle_encode(m: np.ndarray) -> str:
    """COCO's compressed RLE of a mask (column-major), written independently of the decoder under test."""
    flat = m.T.reshape(-1)
    counts, prev, run = [], 0, 0
    for v in flat:
        if v != prev:
            counts.append(run)
            run, prev = 0, v
        run += 1
    counts.append(run)
    out = []
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = not ((x == 0 and not ch & 0x10) or (x == -1 and ch & 0x10))
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def coco_doc(files: list[str], cats: list[str]) -> dict:
    m = np.zeros((S, S), np.uint8)
    m[5:40, 12:20] = 1
    images = [{"id": i + 1, "file_name": f, "height": S, "width": S} for i, f in enumerate(files)]
    anns = []
    for i in range(len(files)):
        anns.append({"id": 2 * i + 1, "image_id": i + 1, "category_id": 1, "area": 400.0,
                     "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]]})
        anns.append({"id": 2 * i + 2, "image_id": i + 1, "category_id": 2, "area": 280.0,
                     "segmentation": {"size": [S, S], "counts": rle_encode(m)}})
    return {"images": images, "annotations": anns,
            "categories": [{"id": k + 1, "name": c} for k, c in enumerate(cats)]}


def paco(lisa: Path) -> Path:
    files = [f"train2017/{100 + i:012d}.jpg" for i in range(2)]
    for i, f in enumerate(files):
        img(lisa / "coco" / f, 100 + i)
    doc = coco_doc(files, ["bottle:cap", "mug:handle"])
    doc["annotations"].append({"id": 99, "image_id": 42, "category_id": 1, "area": 500.0,
                               "segmentation": [[0, 0, 5, 0, 5, 5]]})  # its image is not listed
    return write_json(lisa / "vlpart" / "paco" / "annotations" / "paco_lvis_v1_train.json", doc)


def pascal_part(lisa: Path) -> Path:
    root = lisa / "vlpart" / "pascal_part"
    files = [f"2008_{i:06d}.jpg" for i in range(2)]
    for i, f in enumerate(files):
        img(root / "VOCdevkit" / "VOC2010" / "JPEGImages" / f, 300 + i)
    return write_json(root / "train.json", coco_doc(files, ["person:hair", "dog:tail"]))


def refer(lisa: Path) -> Path:
    root = lisa / "refer_seg"
    for ds, split_by in (("refcoco", "unc"), ("refcoco+", "unc"), ("refcocog", "umd"), ("refclef", "unc")):
        if ds == "refclef":
            files = [f"{i}/images/{2500 + i}.jpg" for i in range(2)]
            folder = root / "images" / "saiapr_tc-12"
        else:
            files = [f"COCO_train2014_{i:012d}.jpg" for i in range(2)]
            folder = root / "images" / "mscoco" / "images" / "train2014"
        for i, f in enumerate(files):
            img(folder / f, 400 + i)
        doc = coco_doc(files, ["person", "dog"])
        write_json(root / ds / "instances.json", doc)
        refs = [{"ref_id": k, "ann_id": a["id"], "image_id": a["image_id"], "split": "train" if k < 3 else "val",
                 "category_id": a["category_id"], "sentences": [{"sent": f"the thing number {k}", "raw": "x"}]}
                for k, a in enumerate(doc["annotations"])]
        refs.append({"ref_id": 9, "ann_id": 777, "image_id": 1, "split": "train", "sentences": [{"sent": "gone"}]})
        (root / ds / f"refs({split_by}).p").write_bytes(pickle.dumps(refs, protocol=2))
    return root


def reasonseg(root: Path) -> Path:
    for i in range(3):
        img(root / "train" / f"r{i}.jpg", 500 + i)
        write_json(root / "train" / f"r{i}.json", {
            "text": ["What part of the object would you hold?"], "is_sentence": True,
            "shapes": [{"label": "target", "points": [[5, 5], [30, 5], [30, 30], [5, 30]]}]})
    img(root / "train" / "orphan.jpg", 509)  # no annotation
    (root / "train" / "broken.jpg").write_bytes(b"junk")
    (root / "train" / "broken.json").write_text("{not json")
    return root


def llava(lisa: Path) -> Path:
    recs = []
    for i in range(3):
        img(lisa / "coco" / "train2017" / f"{200 + i:012d}.jpg", 200 + i)
        recs.append({"id": str(i), "image": f"{200 + i:012d}.jpg", "conversations": [
            {"from": "human", "value": "What is in the picture?\n<image>"}, {"from": "gpt", "value": "Noise."},
            {"from": "human", "value": "Any colour?"}, {"from": "gpt", "value": "All of them."}]})
    recs.append({"id": "bad", "image": "x.jpg", "conversations": [{"from": "gpt", "value": "out of turn"}]})
    recs.append({"id": "missing", "image": f"{299:012d}.jpg", "conversations": [
        {"from": "human", "value": "<image>\nHi?"}, {"from": "gpt", "value": "Hello."}]})
    return write_json(lisa / "llava_dataset" / "llava_instruct_150k.json", recs)


def anomaly_instruct(root: Path) -> Path:
    test = []
    for i in range(3):
        img(root / "images" / f"a{i}.png", 600 + i)
        mask(root / "masks" / f"a{i}.png")
        test.append(Entry(f"images/a{i}.png", f"masks/a{i}.png", "widget", "scratch", 1))
    img(root / "images" / "g0.png", 610)
    test.append(Entry("images/g0.png", "", "widget", "good", 0))
    write_meta(root, {"widget": test})
    record = {"Expectation": "A widget is smooth.", "Observation": "A scratch runs across it.",
              "Diagnosis": "Scratches are not part of a widget.", "Summary": "a scratch",
              "Explanation": "The widget should be smooth, but a scratch crosses it."}
    lines = [json.dumps({"img_path": f"images/a{i}.png", "record": record}) for i in range(2)]
    lines.append('{"img_path": "images/a2.png", "record": {"Expectation": ""}}')  # invalid record
    lines.append("{broken")
    (root / "records.jsonl").write_text("\n".join(lines) + "\n")
    return root


def build_all(base: Path) -> Path:
    """Every tree under `base`, at the paths configs/llava-ov-7b.yaml gives after `/PATH/TO/`."""
    real_iad(base / "Real-IAD")
    mvtec_style(base / "GoodsAD", "drink_can", "dent", ".png")
    mvtec_style(base / "MIAD", "metal_welding", "defective", "_mask.png")
    mvtec_style(base / "DTD-Synthetic", "Woven_001", "bad", "_mask.png", ext=".png")
    zju_leaper(base / "ZJU-Leaper")
    lisa = base / "lisa"
    ade20k(lisa / "ade20k")
    cocostuff(lisa)
    mapillary(lisa / "mapillary")
    paco(lisa)
    pascal_part(lisa)
    refer(lisa)
    reasonseg(lisa / "reason_seg" / "ReasonSeg")
    llava(lisa)
    anomaly_instruct(base / "anomaly-instruct")
    return base
