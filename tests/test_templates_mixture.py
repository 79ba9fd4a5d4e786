"""Templates (anchors, types, normal answers), general sources, the mixture and collate."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from agvas.anchors import ANCHOR_TOKENS, ANO, DIRECT_INSTRUCTION, IMAGE_PLACEHOLDER, NOR, SEG, anchor_string
from agvas.data.collate import collate
from agvas.data.general import (
    COLOURS,
    LisaFolderSource,
    ShapeReferringSource,
    ShapeVQASource,
    load_lisa_item,
    shapes_scene,
)
from agvas.data.instruct import FIELD_NAMES, InstructRecord, mask_geometry
from agvas.data.meta import Entry, write_meta
from agvas.data.mixture import (
    AnomalyInstructSource,
    AnomalySegSource,
    GeneratorPool,
    MetaPool,
    MixtureDataset,
    parse_rates,
)
from agvas.data.templates import (
    DIRECT_ANSWERS_NORMAL,
    DIRECT_QUESTIONS,
    INSTRUCTION_TYPES,
    inference_conversation,
    inference_prompt,
    render,
    render_multi_turn,
    sample_conversation,
)
from agvas.io import save_mask_png, save_png

RECORD = InstructRecord(
    expectation="A normal hazelnut has a smooth, intact brown shell.",
    observation="There is a small hole on the upper part of the hazelnut.",
    diagnosis="The hole breaks the continuity of the shell.",
    summary="The target is the small dark hole at the top of the hazelnut.",
    explanation="The shell should be intact, but a small hole pierces its top, so it is anomalous.",
)
SUBSETS = [ANCHOR_TOKENS, (SEG,), (NOR, ANO), (ANO, SEG)]
ANCHOR_RE = re.compile(r"\[(?:NOR|ANO|SEG)\]")


def anchors_in(text: str) -> list[str]:
    return ANCHOR_RE.findall(text)


def check_conversation(conv: list[dict], anchors: tuple[str, ...], single_turn: bool) -> None:
    """The contract with the model: placeholder once, first; one anchor group, in order, contiguous."""
    assert conv[0]["role"] == "user" and conv[0]["content"].startswith(IMAGE_PLACEHOLDER + "\n")
    assert sum(t["content"].count(IMAGE_PLACEHOLDER) for t in conv) == 1
    assert [t["role"] for t in conv] == ["user", "assistant"] * (len(conv) // 2)
    groups = [t for t in conv if t["role"] == "assistant" and anchor_string(anchors) in t["content"]]
    assert len(groups) == 1
    for turn in conv:
        found = anchors_in(turn["content"])
        if turn["role"] == "user":
            assert not found
        elif found:
            assert found == [a for a in ANCHOR_TOKENS if a in anchors]  # each once, paper order
            assert turn["content"].count(anchor_string(anchors)) == 1
    if single_turn:
        assert len(conv) == 2 and anchors_in(conv[1]["content"])


# -- templates --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", INSTRUCTION_TYPES)
@pytest.mark.parametrize("anchors", SUBSETS, ids=lambda a: "".join(a))
@pytest.mark.parametrize("anomalous", [True, False])
def test_every_type_renders_its_anchors_once_and_in_order(kind: str, anchors: tuple, anomalous: bool) -> None:
    for seed in range(25):
        rng = np.random.default_rng(seed)
        conv = render(kind, RECORD if anomalous else None, rng, anchors, anomalous, "hazelnut")
        check_conversation(conv, anchors, single_turn=True)


@pytest.mark.parametrize("anchors", SUBSETS, ids=lambda a: "".join(a))
def test_multi_turn_dialogues_carry_one_anchor_group(anchors: tuple) -> None:
    shapes = set()
    for seed in range(30):
        for anomalous in (True, False):
            conv = render_multi_turn(RECORD if anomalous else None, np.random.default_rng(seed), anchors,
                                     anomalous, "hazelnut")
            check_conversation(conv, anchors, single_turn=False)
            assert len(conv) == 4
            shapes.add(bool(anchors_in(conv[1]["content"])))
    assert shapes == {True, False}  # both orders occur: segment first, or expectation first


def test_fusion_puts_record_fields_where_the_paper_does() -> None:
    for seed in range(20):
        rng = np.random.default_rng(seed)
        desc = render("describe", RECORD, rng, anomalous=True)[1]["content"]
        assert "hole" in desc and desc.rstrip().endswith(f"{anchor_string()}.")
        plus_q = render("describe-plus", RECORD, rng, anomalous=True)[0]["content"]
        assert plus_q.startswith(f"{IMAGE_PLACEHOLDER}\n{RECORD.expectation} ")
        explain = render("explain", RECORD, rng, anomalous=True)[1]["content"]
        assert explain.endswith(RECORD.explanation) and explain.index(SEG) < explain.index(RECORD.explanation)


def test_literal_anchors_in_a_record_are_removed() -> None:
    noisy = InstructRecord(**{k.lower(): v for k, v in RECORD.to_dict().items()}
                           | {"summary": "Segment the hole [NOR][ANO][SEG].", "explanation": "See <image> [SEG]."})
    for seed in range(30):
        conv = render("describe", noisy, np.random.default_rng(seed))
        check_conversation(conv, ANCHOR_TOKENS, single_turn=True)
        check_conversation(render("explain", noisy, np.random.default_rng(seed)), ANCHOR_TOKENS, True)


def test_normal_answers_say_there_is_no_anomaly() -> None:
    assert all(re.search(r"no anomal|normal|no defect", t.lower()) for t in DIRECT_ANSWERS_NORMAL)
    for kind in INSTRUCTION_TYPES:
        for seed in range(15):
            answer = render(kind, None, np.random.default_rng(seed), anomalous=False, cls_name="bottle")[1]
            assert re.search(r"no anomal|no defect|normal|nothing|without any defect", answer["content"].lower())


def test_question_variety_and_rules() -> None:
    assert len(set(DIRECT_QUESTIONS)) >= 8 and DIRECT_QUESTIONS[0] == DIRECT_INSTRUCTION
    questions = {render("direct", None, np.random.default_rng(s))[0]["content"] for s in range(200)}
    assert len(questions) >= 8
    with pytest.raises(ValueError, match="needs a record"):
        render("explain", None, np.random.default_rng(0), anomalous=True)
    with pytest.raises(ValueError, match="subset"):
        render("direct", None, np.random.default_rng(0), anchors=("[FOO]",))
    with pytest.raises(ValueError, match="unknown instruction type"):
        render("sing", RECORD, np.random.default_rng(0))
    kinds = {sample_conversation(None, np.random.default_rng(s), anomalous=True)[0] for s in range(20)}
    assert kinds == {"direct"}  # no record, no description to give
    kinds = {sample_conversation(RECORD, np.random.default_rng(s))[0] for s in range(300)}
    assert kinds == {*INSTRUCTION_TYPES, "multi-turn"}


def test_inference_prompts() -> None:
    assert inference_prompt("direct") == f"{IMAGE_PLACEHOLDER}\n{DIRECT_INSTRUCTION}"
    assert inference_prompt("direct", with_image=False) == DIRECT_INSTRUCTION
    assert inference_prompt("direct", instruction="Segment the cracks.").endswith("Segment the cracks.")
    assert "describe" in inference_prompt("describe").lower()
    plus = inference_prompt("describe-plus", expectation="A normal tile is flat and grey.")
    assert plus.startswith(f"{IMAGE_PLACEHOLDER}\nA normal tile is flat and grey. ")
    assert "explain" in inference_prompt("explain")
    with pytest.raises(ValueError, match="expectation"):
        inference_prompt("describe-plus")
    with pytest.raises(ValueError, match="unknown mode"):
        inference_prompt("guess")
    conv = inference_conversation("explain")
    assert conv == [{"role": "user", "content": inference_prompt("explain")}]


# -- general sources ----------------------------------------------------------------------------


def test_referring_shapes_mask_the_named_shape() -> None:
    src = ShapeReferringSource(image_size=128)
    for seed in range(10):
        s = src.sample(np.random.default_rng(seed))
        check_conversation(s["conversation"], ANCHOR_TOKENS, single_turn=True)
        assert s["has_mask"] and not s["anomalous"] and s["mask"].sum() > 20
        question = s["conversation"][0]["content"]
        named = [c for c in COLOURS if re.search(rf"\b{c}\b", question)]
        if named:  # the referred pixels have the named colour
            mean = s["image"][s["mask"] > 0].astype(float).mean(axis=0)
            assert np.abs(mean - COLOURS[named[0]]).max() < 25
    a, b = src.sample(np.random.default_rng(3)), src.sample(np.random.default_rng(3))
    assert np.array_equal(a["image"], b["image"]) and a["conversation"] == b["conversation"]


def test_shape_vqa_answers_are_true_and_anchor_free() -> None:
    answers = set()
    for seed in range(40):
        _, shapes = shapes_scene(np.random.default_rng(seed), 96)
        s = ShapeVQASource(image_size=96).sample(np.random.default_rng(seed))
        assert not s["has_mask"] and not s["mask"].any()
        conv = s["conversation"]
        assert conv[0]["content"].startswith(IMAGE_PLACEHOLDER) and not any(anchors_in(t["content"]) for t in conv)
        for q, a in zip(conv[::2], conv[1::2], strict=True):
            if "How many shapes" in q["content"] or "Count the shapes" in q["content"]:
                n = len(shapes)
                assert (f"{n} shapes" in a["content"]) or (n == 1 and "one shape" in a["content"])
            m = re.match(r"How many (\w+) shapes", q["content"])
            if m:
                n = sum(sh.colour == m.group(1) for sh in shapes)
                assert {0: "no ", 1: "one "}.get(n, f"{n} ") in a["content"]
            m = re.match(r"Is there an? (\w+) (\w+) in the image", q["content"])
            if m:
                present = any((sh.colour, sh.kind) == m.groups() for sh in shapes)
                assert a["content"].startswith("Yes" if present else "No")
                answers.add(present)
    assert answers == {True, False}


def test_lisa_folder_loader(tmp_path: Path) -> None:
    save_png(tmp_path / "a.jpg", np.full((40, 60, 3), 128, np.uint8))
    doc = {"text": ["the thing you sit on"], "is_sentence": True, "shapes": [
        {"label": "target", "points": [[10, 10], [50, 10], [50, 30], [10, 30]]},
        {"label": "ignore", "points": [[10, 10], [20, 10], [20, 30], [10, 30]]},
    ]}
    (tmp_path / "a.json").write_text(json.dumps(doc))
    item = load_lisa_item(tmp_path / "a.json")
    assert item.mask.shape == (40, 60) and item.mask[20, 40] == 1 and item.mask[20, 15] == 0
    s = LisaFolderSource(tmp_path, anchors=(SEG,)).sample(np.random.default_rng(0))
    assert s["conversation"][0]["content"].startswith(f"{IMAGE_PLACEHOLDER}\nthe thing you sit on ")
    check_conversation(s["conversation"], (SEG,), single_turn=True)


# -- mixture ----------------------------------------------------------------------------------


class Dummy:
    def __init__(self, name: str) -> None:
        self.name = name

    def sample(self, rng: np.random.Generator) -> dict:
        v = int(rng.integers(256))
        return {"image": np.full((6, 10, 3), v, np.uint8), "mask": np.zeros((6, 10), np.uint8),
                "conversation": [{"role": "user", "content": f"{IMAGE_PLACEHOLDER}\nhi"},
                                 {"role": "assistant", "content": self.name}],
                "has_mask": False, "anomalous": False}


def test_mixture_rates_match_over_many_draws() -> None:
    rates = {"general": 0.5, "anomaly-instruct": 0.2, "anomaly-seg": 0.2, "vqa": 0.1}
    ds = MixtureDataset({n: Dummy(n) for n in rates}, rates, length=2000, seed=1, image_size=8)
    names = [ds[i]["source"] for i in range(len(ds))]
    for n, r in rates.items():
        assert abs(names.count(n) / len(names) - r) < 0.035, (n, names.count(n))
    assert all(ds[i]["conversation"][1]["content"] == ds[i]["source"] for i in range(50))
    assert [ds.source_at(i) for i in range(200)] == names[:200]


def test_mixture_rates_are_validated() -> None:
    with pytest.raises(ValueError, match="no rate for"):
        MixtureDataset({"general": Dummy("g"), "vqa": Dummy("v")}, {"general": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        MixtureDataset({"vqa": Dummy("v")}, {"vqa": 0.0})
    assert MixtureDataset({"vqa": Dummy("v"), "general": Dummy("g")}).rates == {"vqa": 0.25, "general": 0.75}
    assert parse_rates("general=3, vqa=1") == {"general": 3.0, "vqa": 1.0}
    with pytest.raises(ValueError, match="name=number"):
        parse_rates("general")


def make_meta(root: Path) -> Path:
    rng = np.random.default_rng(0)
    entries = []
    for i in range(4):
        save_png(root / f"img{i}.png", rng.integers(0, 255, (40, 30, 3), dtype=np.uint8))
        if i < 3:
            mask = np.zeros((40, 30), np.uint8)
            mask[5:15 + i, 5:12] = 1
            save_mask_png(root / f"m{i}.png", mask)
            entries.append(Entry(f"img{i}.png", f"m{i}.png", "hazelnut", "hole", 1))
        else:
            entries.append(Entry(f"img{i}.png", "", "hazelnut", "good", 0))
    write_meta(root, {"hazelnut": entries})
    return root


def synth(rng: np.random.Generator) -> dict:
    image = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
    mask = np.zeros((48, 48), np.uint8)
    mask[2:6, 2:30] = 1
    return {"image": image, "mask": mask, "metadata": {"family": "texture", "kind": "scratch",
                                                      "location": "top-left", "object": "fabric"}}


def full_mixture(root: Path, **kw: object) -> MixtureDataset:
    sources = {
        "general": ShapeReferringSource(image_size=64),
        "anomaly-instruct": AnomalyInstructSource(GeneratorPool(synth)),
        "anomaly-seg": AnomalySegSource(MetaPool(root)),
        "vqa": ShapeVQASource(image_size=64),
    }
    return MixtureDataset(sources, length=40, image_size=32, **kw)  # type: ignore[arg-type]


def test_mixture_is_deterministic_and_shaped(tmp_path: Path) -> None:
    root = make_meta(tmp_path)
    a, b = full_mixture(root, seed=5), full_mixture(root, seed=5)
    order = list(range(len(a)))[::-1]
    seen_b = {i: b[i] for i in order}  # access order does not matter
    seen_sources = set()
    for i in range(len(a)):
        x, y = a[i], seen_b[i]
        assert np.array_equal(x["image"], y["image"]) and np.array_equal(x["mask"], y["mask"])
        assert x["conversation"] == y["conversation"] and x["source"] == y["source"]
        assert x["image"].shape == (32, 32, 3) and x["image"].dtype == np.uint8
        assert x["mask"].shape == (32, 32) and set(np.unique(x["mask"])) <= {0, 1}
        assert x["has_mask"] == (x["source"] != "vqa")
        seen_sources.add(x["source"])
        if x["source"] != "vqa":
            check_conversation(x["conversation"], ANCHOR_TOKENS, single_turn=False)
    assert seen_sources == {"general", "anomaly-instruct", "anomaly-seg", "vqa"}
    a.set_epoch(1)
    assert any(not np.array_equal(a[i]["image"], seen_b[i]["image"]) for i in range(10))
    other = full_mixture(root, seed=6)
    assert any(other[i]["conversation"] != seen_b[i]["conversation"] for i in range(10))


def test_anomaly_seg_source_gives_direct_instructions_and_empty_normal_masks(tmp_path: Path) -> None:
    src = AnomalySegSource(MetaPool(make_meta(tmp_path)), anchors=(SEG,), normal_rate=0.5)
    kinds = set()
    for seed in range(30):
        s = src.sample(np.random.default_rng(seed))
        check_conversation(s["conversation"], (SEG,), single_turn=True)
        kinds.add(s["anomalous"])
        assert s["mask"].any() == s["anomalous"]
        if not s["anomalous"]:
            assert re.search(r"no anomal|normal|no defect", s["conversation"][1]["content"].lower())
    assert kinds == {True, False}


def test_anomaly_instruct_prefers_lmm_records_then_metadata_then_mask(tmp_path: Path) -> None:
    root = make_meta(tmp_path)
    lmm = {n: f"LMM {n.lower()} for img1." for n in FIELD_NAMES}
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps({"img_path": "img1.png", "cls_name": "hazelnut", "record": lmm, "model": "m"}) + "\n")
    src = AnomalyInstructSource(MetaPool(root), records=path, type_rates={"explain": 1.0}, records_only=True)
    texts = {src.sample(np.random.default_rng(s))["conversation"][1]["content"] for s in range(30)}
    assert any(t.endswith("LMM explanation for img1.") for t in texts)
    anomalous_paths = {e.img_path for e in src.pool.anomalous}
    assert anomalous_paths == {"img1.png"}

    gen = AnomalyInstructSource(GeneratorPool(synth), type_rates={"describe": 1.0})
    desc = gen.sample(np.random.default_rng(0))["conversation"][1]["content"]
    assert "scratch" in desc and "fabric" in desc

    plain = AnomalyInstructSource(MetaPool(root), normal_rate=0.0)  # no records: the mask speaks
    rng = np.random.default_rng(1)
    item = plain.pool.draw(rng, 0.0)
    where = mask_geometry(item.mask).location
    assert item.anomalous and where in plain.record_for(item, rng).observation
    normal = plain.record_for(replace(item, anomalous=False, mask=item.mask * 0), rng)
    assert "no anomaly" in (normal.summary + normal.observation).lower() or "no defect" in normal.observation


def test_generator_pool_accepts_tuples_and_objects() -> None:
    pool = GeneratorPool(lambda rng: (np.zeros((8, 8, 3), np.uint8), np.ones((8, 8), np.uint8)))
    item = pool.draw(np.random.default_rng(0))
    assert item.anomalous and item.metadata is None

    class Out:
        image = np.zeros((8, 8, 3), np.uint8)
        mask = np.zeros((8, 8), bool)
        meta = {"kind": "stain"}
        cls_name = "carpet"

    item = GeneratorPool(lambda rng: Out()).draw(np.random.default_rng(0))
    assert not item.anomalous and item.cls_name == "carpet" and item.metadata == {"kind": "stain"}


def test_bad_source_output_is_named() -> None:
    class Bad(Dummy):
        def sample(self, rng: np.random.Generator) -> dict:
            return super().sample(rng) | {"conversation": [{"role": "user", "content": "no image here"}]}

    ds = MixtureDataset({"general": Bad("x")}, length=2)
    with pytest.raises(ValueError, match="'general'.*<image>"):
        ds[0]
    with pytest.raises(IndexError):
        ds[2]


def test_resize_keeps_the_mask_binary() -> None:
    class Odd(Dummy):
        def sample(self, rng: np.random.Generator) -> dict:
            mask = np.zeros((30, 50), np.uint8)
            mask[10:20, 10:40] = 1
            return super().sample(rng) | {"image": np.zeros((30, 50, 3), np.uint8), "mask": mask}

    s = MixtureDataset({"general": Odd("x")}, length=1, image_size=16)[0]
    assert s["image"].shape == (16, 16, 3) and set(np.unique(s["mask"])) == {0, 1}


# -- collate ----------------------------------------------------------------------------------


def test_collate_shapes_dtypes_and_processor(tmp_path: Path) -> None:
    ds = full_mixture(make_meta(tmp_path), seed=2)
    samples = [ds[i] for i in range(5)]
    batch = collate(samples)
    assert batch["images"].shape == (5, 3, 32, 32) and batch["images"].dtype == torch.uint8
    assert batch["masks"].shape == (5, 32, 32) and batch["masks"].dtype == torch.float32
    assert batch["has_mask"].dtype == torch.bool and batch["has_mask"].tolist() == [s["has_mask"] for s in samples]
    assert batch["conversations"] == [s["conversation"] for s in samples]
    assert torch.equal(batch["images"][0], torch.from_numpy(samples[0]["image"]).permute(2, 0, 1))
    assert set(batch["masks"].unique().tolist()) <= {0.0, 1.0}
    assert collate(samples, processor=lambda b: ("processed", len(b["sources"]))) == ("processed", 5)

    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate)
    assert next(iter(loader))["images"].shape == (4, 3, 32, 32)

    with pytest.raises(ValueError, match="differ in shape"):
        collate([samples[0], {**samples[1], "image": np.zeros((8, 8, 3), np.uint8)}])
    with pytest.raises(ValueError, match="empty"):
        collate([])



def test_readable_answers_drop_the_anchor_tokens():
    from agvas.anchors import direct_answer, readable_answer

    assert readable_answer(direct_answer()) == "Sure, it is."
    assert readable_answer("A hole at the top [NOR][ANO][SEG] , as marked.") == "A hole at the top, as marked."
    assert readable_answer("There is no anomaly.[NOR] [ANO]\nFine") == "There is no anomaly. Fine"
    assert readable_answer("No anchors [SEGMENT] here") == "No anchors [SEGMENT] here"
