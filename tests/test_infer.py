"""Inference: the Segmenter's two paths agree, generation reads the anchors where they are, inputs load."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from model_fixtures import build, conversation
from PIL import Image

from agvas.anchors import direct_answer
from agvas.data.templates import inference_conversation
from agvas.infer import (
    CheckpointNotFoundError,
    ImageLoadError,
    QuantizationUnavailableError,
    Segmenter,
    UntrainedModelWarning,
    expand_paths,
    load_image,
)
from agvas.infer import loading as loading_module
from agvas.infer.generate import greedy_generate
from agvas.infer.images import as_input_list
from agvas.infer.render import CONTOUR_COLOUR, heat_image, overlay_image, save_result_images
from agvas.model.agvas import AGVASModel
from agvas.model.config import preset_config
from agvas.model.losses import text_loss

# (H, W) of the test images: square, landscape, portrait — one batch mixes them.
SIZES = [(64, 64), (48, 80), (70, 50)]


def fit_direct_answer(model: AGVASModel, max_steps: int = 120, lr: float = 5e-3) -> int:
    """Teach a tiny model to answer the direct question with the direct answer (text CE only), on the
    images the tests use.

    The encoders' features are computed once (they get no gradient from the text loss anyway), so each
    step is one small LLM forward/backward. Stops once the teacher-forced argmax equals the answer on
    three consecutive steps with a low loss — i.e. greedy decoding reproduces it, with a margin.
    """
    model.train()
    images = random_images()
    batch = model.processor({"images": images, "conversations": [conversation(model.config.anchors)] * len(images)})
    with torch.no_grad():
        f_s, f_p = model.encode_images(batch["semantic_pixels"], batch["sam_pixels"])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    labels, streak = batch["labels"], 0
    for step in range(max_steps):  # noqa: B007 - returned below
        opt.zero_grad()
        _, logits = model.run_llm(model.embed_inputs(batch["input_ids"], f_s, f_p), None)
        loss = text_loss(logits, labels)
        target = labels[:, 1:]
        correct = bool(((logits[:, :-1].argmax(-1) == target) | (target == -100)).all())
        streak = streak + 1 if correct and loss.item() < 0.1 else 0
        if streak >= 3:  # checked on the current weights, so the weights kept are the ones checked
            break
        loss.backward()
        opt.step()
    model.eval()
    return step + 1


def random_images(sizes=SIZES, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*s, 3), dtype=np.uint8) for s in sizes]


@pytest.fixture(scope="module")
def fitted_checkpoint(tiny_backbones, tmp_path_factory) -> Path:
    model = build(preset_config("tiny"), tiny_backbones)
    fit_direct_answer(model)
    return model.save_pretrained(tmp_path_factory.mktemp("fitted") / "ckpt")


@pytest.fixture(scope="module")
def segmenter(fitted_checkpoint) -> Segmenter:
    return Segmenter.from_pretrained(fitted_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def fast_results(segmenter):
    """The fast path on the three test images in ONE batch (three sizes in one batch)."""
    return segmenter.segment(random_images(), batch_size=3)


# ---- the two paths ---------------------------------------------------------------------------------
def test_fast_path_equals_generation_path(segmenter, fast_results):
    images = random_images()
    generated = segmenter.segment(images, fast=False, batch_size=2)  # batched differently from the fast run
    answer = direct_answer(segmenter.anchors)
    assert [r.text for r in generated] == [answer] * len(images), "the fitted model must generate the answer"
    for image, f, g in zip(images, fast_results, generated, strict=True):
        assert f.mask.shape == g.mask.shape == image.shape[:2]
        assert f.mask.dtype == bool and f.anomaly_map.dtype == np.float32
        assert np.array_equal(f.mask, g.mask)
        np.testing.assert_allclose(f.anomaly_map, g.anomaly_map, atol=1e-5)
        np.testing.assert_allclose(f.seg_map, g.seg_map, atol=1e-5)
        assert f.anchors_found and g.anchors_found and f.text == answer
        assert 0.0 < f.area_fraction < 1.0  # a non-trivial mask, so equality means something


def test_result_fields(fast_results):
    r = fast_results[0]
    np.testing.assert_allclose(r.anomaly_map, 0.5 * r.seg_map + 0.5 * r.ano_map, atol=1e-6)
    assert np.array_equal(r.mask, r.anomaly_map > 0.5)
    assert r.score == pytest.approx(float(r.anomaly_map.max()))
    assert r.anomalous == bool(r.mask.any())
    assert set(r.summary()) >= {"path", "text", "score", "anomalous", "area_fraction", "mode"}


def test_anchor_ending_the_budget_is_fed_once_more(segmenter, fast_results):
    """Cut the answer right after its last anchor: the anchor still gets its own hidden state."""
    tok = segmenter.model.tokenizer
    answer_ids = tok(direct_answer(segmenter.anchors), add_special_tokens=False).input_ids
    last_anchor = max(answer_ids.index(a) for a in segmenter.model.anchor_ids)
    image = random_images(SIZES[:1])
    cut = segmenter.segment(image, fast=False, max_new_tokens=last_anchor + 1)[0]
    assert cut.anchors_found and "max_new_tokens" in cut.note
    np.testing.assert_allclose(cut.anomaly_map, fast_results[0].anomaly_map, atol=1e-5)


def test_generation_hidden_states_match_a_full_forward_and_left_padding(segmenter):
    model, proc = segmenter.model, segmenter.model.processor
    image = random_images(SIZES[:1])
    prompts = [proc.encode(inference_conversation(m), add_generation_prompt=True).input_ids
               for m in ("direct", "describe")]
    assert len(prompts[0]) != len(prompts[1])
    with torch.inference_mode():
        pixels = segmenter.prepare_images(image * 2)
        f_s, f_p = segmenter.encode_images(pixels)
        singles = []
        for i, ids in enumerate(prompts):
            t = torch.tensor([ids])
            gen = greedy_generate(model, model.embed_inputs(t, f_s[i:i + 1], f_p[i:i + 1]), None, 6)
            full = torch.tensor([ids + gen.tokens[0]])
            hidden, _ = model.run_llm(model.embed_inputs(full, f_s[i:i + 1], f_p[i:i + 1]), None)
            n = min(hidden.shape[1], gen.hidden.shape[1])
            torch.testing.assert_close(gen.hidden[:, :n], hidden[:, :n], atol=1e-4, rtol=1e-4)
            assert (gen.answer_ids[0, :len(ids)] == proc.pad_id).all()  # anchors never read from the prompt
            singles.append(gen)
        ids, attn = segmenter.left_pad(prompts)
        both = greedy_generate(model, model.embed_inputs(ids, f_s, f_p), attn, 6)
    assert both.tokens == [s.tokens[0] for s in singles]
    for i, single in enumerate(singles):  # sample i sits behind (longest - its length) pads
        pad = ids.shape[1] - len(prompts[i])
        n = single.hidden.shape[1]
        torch.testing.assert_close(both.hidden[i, pad:pad + n], single.hidden[0], atol=1e-4, rtol=1e-4)


def test_no_anchors_gives_an_empty_mask_and_says_so(tiny_backbones):
    seg = Segmenter(build(preset_config("tiny"), tiny_backbones), device="cpu")  # untrained: rambles
    r = seg.segment(random_images(SIZES[1:2]), mode="describe", max_new_tokens=3)[0]
    assert not r.anchors_found and not r.anomalous and not r.mask.any()
    assert r.mask.shape == SIZES[1] and r.seg_map is None and r.score == 0.0
    assert "no mask" in r.note and r.text


def test_variant_without_seg_head(tiny_backbones):
    seg = Segmenter(build(preset_config("tiny", "no-seg"), tiny_backbones), device="cpu")
    r = seg.segment(random_images(SIZES[:1]))[0]
    assert r.text == "Sure, it is [NOR][ANO]." and r.seg_map is None and r.ano_map is not None
    np.testing.assert_allclose(r.anomaly_map, r.ano_map)


def test_borrowing_a_training_model_leaves_it_as_it_was(tiny_backbones, fitted_checkpoint):
    """The trainer's check runs the fast path on the live model: nothing frozen, cast or left in eval mode,
    and the maps are those of a Segmenter that owns a copy of the same weights."""
    model = AGVASModel.from_pretrained(fitted_checkpoint)
    model.train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    with Segmenter.borrowing(model) as seg:
        assert not model.training
        borrowed = seg.segment(random_images(), batch_size=3)
    assert model.training and {n for n, p in model.named_parameters() if p.requires_grad} == trainable
    owned = Segmenter.from_pretrained(fitted_checkpoint, device="cpu").segment(random_images(), batch_size=3)
    for a, b in zip(borrowed, owned, strict=True):
        np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, atol=1e-5)
        assert (a.mask == b.mask).all()


# ---- modes and chat --------------------------------------------------------------------------------
def test_mode_errors(segmenter):
    with pytest.raises(ValueError, match="needs expectation"):
        segmenter.segment(random_images(SIZES[:1]), mode="describe-plus")
    with pytest.raises(ValueError, match="unknown mode"):
        segmenter.segment(random_images(SIZES[:1]), mode="poetry")
    with pytest.raises(ValueError, match="chat"):
        segmenter.segment(random_images(SIZES[:1]), mode="chat")


def test_generating_modes_run(segmenter):
    image = random_images(SIZES[:1])
    plus = segmenter.segment(image, mode="describe-plus", expectation="A normal tile is uniformly grey.",
                             max_new_tokens=6)[0]
    explain = segmenter.segment(image, mode="explain", max_new_tokens=6)[0]
    for r, mode in ((plus, "describe-plus"), (explain, "explain")):
        assert r.mode == mode and r.mask.shape == SIZES[0] and r.text


def test_chat_keeps_history_and_masks_anchor_turns(segmenter):
    session = segmenter.chat(random_images(SIZES[1:2])[0], max_new_tokens=12)
    first = session.ask("Please segment the anomalies in this image.")
    assert first.anchors_found and first.mask.shape == SIZES[1] and first.mode == "chat"
    second = session.ask("Why is that region anomalous?")
    assert session.turns == 2 and len(session.history) == 4
    assert session.history[0]["content"].startswith("<image>\n") and "<image>" not in session.history[2]["content"]
    assert session.history[3]["content"] == second.text
    with pytest.raises(ValueError, match="reserved"):
        session.ask("look at <image>")


# ---- loading ---------------------------------------------------------------------------------------
def test_missing_default_checkpoint_says_how_to_make_it(monkeypatch, tmp_path):
    monkeypatch.setattr(loading_module, "DEFAULT_CHECKPOINT", tmp_path / "agvas-tiny")
    with pytest.raises(CheckpointNotFoundError, match="agvas train --config configs/tiny.yaml"):
        Segmenter.from_pretrained(device="cpu")
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        Segmenter.from_pretrained(tmp_path / "nope", device="cpu")


def test_preset_warns_that_it_is_untrained(monkeypatch, tiny_backbones):
    import agvas.model.build

    built = []
    monkeypatch.setattr(agvas.model.build, "build_model",  # the real one writes fresh backbones: slow here
                        lambda preset, dtype: built.append((preset, dtype)) or build(preset_config(preset),
                                                                                      tiny_backbones))
    with pytest.warns(UntrainedModelWarning, match="UNTRAINED"):
        seg = Segmenter.from_pretrained("tiny", device="cpu", dtype="fp32")
    assert built == [("tiny", torch.float32)] and seg.source.startswith("preset:tiny")
    assert seg.dtype == torch.float32 and seg.device.type == "cpu"


def test_quantization_needs_cuda_and_bitsandbytes(fitted_checkpoint):
    import importlib.util

    if torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("this machine can quantise")
    for flag in ("load_in_8bit", "load_in_4bit"):
        with pytest.raises(QuantizationUnavailableError, match="bitsandbytes|CUDA"):
            Segmenter.from_pretrained(fitted_checkpoint, **{flag: True})
    with pytest.raises(ValueError, match="one of"):
        Segmenter.from_pretrained(fitted_checkpoint, load_in_8bit=True, load_in_4bit=True)


# ---- inputs ----------------------------------------------------------------------------------------
def test_images_of_any_mode(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (12, 9, 3), dtype=np.uint8)
    cases = {
        "grey.png": Image.fromarray(rgb[..., 0]),
        "rgba.png": Image.fromarray(np.dstack([rgb, np.full((12, 9), 255, np.uint8)])),
        "deep.png": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257),
        "pal.png": Image.fromarray(rgb).convert("P"),
    }
    for name, im in cases.items():
        im.save(tmp_path / name)
        out = load_image(tmp_path / name)
        assert out.shape == (12, 9, 3) and out.dtype == np.uint8, name
    assert np.array_equal(load_image(rgb.astype(np.float32) / 255.0), rgb)
    assert np.array_equal(load_image(torch.from_numpy(rgb).permute(2, 0, 1)), rgb)
    assert load_image(rgb[..., 0] > 100).max() == 255
    assert load_image(rgb[..., 0].astype(np.uint16) * 257).shape == (12, 9, 3)
    assert np.array_equal(load_image(Image.fromarray(rgb)), rgb)


def test_bad_inputs_name_the_file(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ImageLoadError, match="broken.png"):
        load_image(tmp_path / "broken.png")
    with pytest.raises(ImageLoadError, match="missing.png: file not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageLoadError, match="shape"):
        load_image(np.zeros((2, 3, 4, 5)), "weird")
    with pytest.raises(ImageLoadError, match="NaN"):
        load_image(np.full((4, 4), np.nan))


def test_folders_and_globs(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / sub / "x.png")
    (tmp_path / "a" / "notes.txt").write_text("no image")
    found = expand_paths([tmp_path / "a", str(tmp_path / "*" / "x.png"), tmp_path / "a" / "x.png",
                          str(tmp_path / "none*.png"), tmp_path / "gone.png"])
    assert [p.relative_to(tmp_path).as_posix() for p in found.paths] == ["a/x.png", "b/x.png"]
    assert len(found.problems) == 2 and any("gone.png" in p for p in found.problems)
    assert len(as_input_list(str(tmp_path / "*" / "*.png"))) == 2
    with pytest.raises(ImageLoadError, match="no image"):
        as_input_list(str(tmp_path / "*.jpg"))


# ---- rendering -------------------------------------------------------------------------------------
def test_render_outputs(fast_results, tmp_path):
    image, r = random_images()[1], fast_results[1]
    heat = heat_image(r.anomaly_map)
    assert heat.shape == (*SIZES[1], 3) and heat.dtype == np.uint8
    assert not np.array_equal(heat_image(np.zeros((2, 2))), heat_image(np.ones((2, 2))))
    mask = np.zeros(SIZES[1], dtype=bool)
    mask[10:30, 20:50] = True
    over = overlay_image(image, r.anomaly_map, mask)
    assert (over[10, 30] == CONTOUR_COLOUR).all() and not (over[20, 35] == CONTOUR_COLOUR).all()
    names = save_result_images(tmp_path, "img", image, r)
    saved = np.asarray(Image.open(tmp_path / names["mask"]))
    assert saved.shape == SIZES[1] and set(np.unique(saved)) <= {0, 255}
    assert np.array_equal(saved > 0, r.mask)
    assert np.asarray(Image.open(tmp_path / names["overlay"])).shape == (*SIZES[1], 3)


def test_a_checkout_folder_named_agvas_in_the_cwd_is_detected(tmp_path):
    """Python imports ./agvas (a checkout's root, no __init__.py) as a namespace package; say so, and
    still find the shipped checkpoint (issue 12, item 14)."""
    import subprocess
    import sys

    (tmp_path / "agvas" / "agvas").mkdir(parents=True)  # a checkout of this project, seen from its parent
    code = ("from agvas.infer import DEFAULT_CHECKPOINT, Segmenter; "
            "print(DEFAULT_CHECKPOINT)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr
    from agvas.infer.loading import DEFAULT_CHECKPOINT

    assert proc.stdout.strip() == str(DEFAULT_CHECKPOINT)
    assert str(tmp_path / "agvas") in proc.stderr and "namespace package" in proc.stderr


def test_both_paths_feed_the_fine_branch_its_pixels(fitted_checkpoint, fast_results):
    """A model with the fine branch gets SAM's pixels on the fast path and on generation alike: their masks
    agree, and a trained (non-zero) branch changes the maps."""
    model = AGVASModel.from_pretrained(fitted_checkpoint)
    model.add_fine_branch()
    torch.manual_seed(0)
    torch.nn.init.normal_(model.fine.proj.weight, std=0.5)
    seg = Segmenter(model, device="cpu")
    images = random_images()
    fast = seg.segment(images, batch_size=3)
    generated = seg.segment(images, fast=False, batch_size=2)
    for f, g, before in zip(fast, generated, fast_results, strict=True):
        assert g.text == direct_answer(seg.anchors)
        np.testing.assert_allclose(f.anomaly_map, g.anomaly_map, atol=1e-5)
        assert not np.allclose(f.anomaly_map, before.anomaly_map, atol=1e-3)
