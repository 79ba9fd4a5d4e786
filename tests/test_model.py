"""The AG-VAS network on tiny random configs of the real Hugging Face classes."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from model_fixtures import batch_for, build, conversation, frozen_config, square_mask
from transformers import LlavaForConditionalGeneration, LlavaOnevisionForConditionalGeneration, SamModel
from transformers.models.sam.modeling_sam import SamTwoWayTransformer

from agvas.anchors import ANCHOR_TOKENS, ANO, IMAGE_PLACEHOLDER, NOR, SEG
from agvas.model.agvas import fuse
from agvas.model.backbones import CheckpointError
from agvas.model.config import VARIANTS, preset_config
from agvas.model.decoder import AnchorGuidedMaskDecoder
from agvas.model.losses import bce_loss, defect_loss, dice_loss, image_loss, normal_loss, segmentation_losses
from agvas.model.refiner import TokenRefiner
from agvas.model.spam import SemanticPixelAlignment
from agvas.model.transformer import TwoWayTransformer


@pytest.fixture(scope="module")
def tiny(tiny_backbones):
    return build(preset_config("tiny"), tiny_backbones)


def test_module_shapes():
    spam = SemanticPixelAlignment(llm_dim=32, pixel_dim=16, num_heads=4)
    assert spam(torch.randn(2, 9, 32), torch.randn(2, 16, 4, 4)).shape == (2, 9, 32)
    assert TokenRefiner(32, 16)(torch.randn(2, 3, 32)).shape == (2, 3, 16)
    dec = AnchorGuidedMaskDecoder(ANCHOR_TOKENS, dim=16, num_heads=2, mlp_dim=32)
    out = dec(torch.randn(2, 3, 16), torch.randn(2, 16, 4, 5))
    for logits in (out.seg_logits, out.nor_logits, out.ano_logits):
        assert logits.shape == (2, 16, 20)  # 4x the embedding grid
    only_seg = AnchorGuidedMaskDecoder((SEG,), dim=16, num_heads=2, mlp_dim=32)(torch.randn(1, 1, 16),
                                                                                 torch.randn(1, 16, 4, 4))
    assert only_seg.nor_logits is None and only_seg.ano_logits is None and only_seg.seg_logits.shape == (1, 16, 16)


def test_forward_shapes_and_mask_is_thresholded_fusion(tiny):
    batch = batch_for(tiny, n=2, size=64)
    with torch.no_grad():
        out = tiny(**batch)
    n_img = tiny.processor.num_image_tokens
    assert n_img == 2 * tiny.semantic_encoder.num_tokens  # f_s and f_align
    assert out.logits.shape == (*batch["input_ids"].shape, len(tiny.tokenizer))
    assert out.seg_logits.shape == out.nor_logits.shape == out.ano_logits.shape == (2, 64, 64)
    assert out.anchor_found.tolist() == [True, True]
    p, p_seg, p_ano = tiny.probability_maps(out)
    expected = 0.5 * torch.sigmoid(out.seg_logits) + 0.5 * torch.softmax(
        torch.stack([out.nor_logits, out.ano_logits]), dim=0)[1]
    torch.testing.assert_close(p, expected)
    assert torch.equal(tiny.binary_mask(p), expected > 0.5)
    assert p.min() >= 0 and p.max() <= 1


def test_a_bf16_model_takes_the_processors_fp32_pixels(tiny_backbones):
    """DeepSpeed casts the whole model to bf16 and does not autocast: the fp32 pixels of the processor must
    still go through both encoders (a dtype clash in SAM's patch embedding otherwise) and give a loss."""
    model = build(preset_config("tiny"), tiny_backbones).to(torch.bfloat16)
    batch = batch_for(model, n=2, size=64)
    assert batch["semantic_pixels"].dtype == torch.float32
    out = model(**batch)
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss.float())


def test_fusion_weights():
    seg, nor, ano = torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([-1.0])
    p, p_seg, p_ano = fuse(seg, nor, ano, alpha=0.25)
    want = 0.25 * (1 / (1 + math.exp(-2))) + 0.75 * (math.exp(-1) / (math.exp(-1) + 1))
    assert p.item() == pytest.approx(want, rel=1e-6)
    assert fuse(seg, None, None, 0.5)[0].item() == pytest.approx(1 / (1 + math.exp(-2)))


def test_anchor_positions_account_for_image_expansion(tiny):
    """The hidden state read for an anchor must be the one at that anchor in the expanded sequence."""
    proc = tiny.processor
    conv = conversation()
    plain = proc.tokenizer.apply_chat_template(conv, tokenize=False)
    raw_ids = proc.tokenizer(plain, add_special_tokens=False).input_ids
    enc = proc.encode(conv)
    assert len(enc.input_ids) == len(raw_ids) - 1 + proc.num_image_tokens
    ids = torch.tensor([enc.input_ids])
    positions, found = tiny.anchor_positions(ids)
    assert found.item()
    for k, anchor in enumerate((NOR, ANO, SEG)):
        anchor_id = proc.tokenizer.convert_tokens_to_ids(anchor)
        raw_pos = raw_ids.index(anchor_id)
        assert positions[0, k].item() == raw_pos + proc.num_image_tokens - 1
        assert enc.input_ids[positions[0, k]] == anchor_id
    # Consecutive anchors "[NOR][ANO][SEG]" sit at consecutive positions.
    assert (positions[0, 1:] - positions[0, :-1]).tolist() == [1, 1]


def test_hidden_states_come_from_the_anchor_positions(tiny):
    batch = batch_for(tiny, n=1)
    with torch.no_grad():
        f_s, f_p = tiny.encode_images(batch["semantic_pixels"], batch["sam_pixels"])
        hidden, _ = tiny.run_llm(tiny.embed_inputs(batch["input_ids"], f_s, f_p), batch["attention_mask"])
        positions, _ = tiny.anchor_positions(batch["input_ids"])
        direct = tiny.decoder(tiny.refiner(hidden[0, positions[0]]).unsqueeze(0), f_p)
        via_model, _ = tiny.decode_masks(hidden, batch["input_ids"], f_p)
    torch.testing.assert_close(direct.seg_logits, via_model.seg_logits)


def test_labels_cover_only_the_answer(tiny):
    enc = tiny.processor.encode(conversation())
    labelled = [t for t, lab in zip(enc.input_ids, enc.labels, strict=True) if lab != -100]
    text = tiny.tokenizer.decode(labelled)
    assert text.startswith("Sure, it is [NOR][ANO][SEG].")
    assert "user" not in text and "assistant" not in text
    assert all(lab == -100 for t, lab in zip(enc.input_ids, enc.labels, strict=True)
               if t == tiny.processor.image_token_id)


def test_loss_by_hand_on_4x4():
    """L_seg for one image: [SEG] BCE/Dice on sigmoid, [NOR]/[ANO] BCE/Dice on the 2-way softmax."""
    seg = torch.tensor([[2.0, -1.0, 0.5, 0.0]] * 4).unsqueeze(0)
    nor = torch.zeros(1, 4, 4)
    ano = torch.tensor([[1.0, 0.0, -2.0, 3.0]] * 4).unsqueeze(0)
    gt = torch.tensor([[1.0, 0.0, 0.0, 1.0]] * 4).unsqueeze(0)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731

    def bce(ps, ts):
        return -sum(t * math.log(p) + (1 - t) * math.log(1 - p) for p, t in zip(ps, ts, strict=True)) / len(ps)

    def dice(ps, ts):
        inter = sum(p * t for p, t in zip(ps, ts, strict=True))
        return 1 - (2 * inter + 1) / (sum(ps) + sum(ts) + 1)

    ts = [1, 0, 0, 1] * 4
    p_seg = [sig(v) for v in [2.0, -1.0, 0.5, 0.0]] * 4
    p_ano = [sig(v) for v in [1.0, 0.0, -2.0, 3.0]] * 4
    p_nor = [1 - p for p in p_ano]
    want = {
        "bce_seg": 0.5 * bce(p_seg, ts), "dice_seg": 2.0 * dice(p_seg, ts),
        "bce_ano": 0.5 * bce(p_ano, ts), "dice_ano": 2.0 * dice(p_ano, ts),
        "bce_nor": 0.5 * bce(p_nor, [1 - t for t in ts]), "dice_nor": 2.0 * dice(p_nor, [1 - t for t in ts]),
    }
    got = segmentation_losses(seg, nor, ano, gt)
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k].item() == pytest.approx(v, rel=1e-5), k


def test_empty_mask_loss_is_finite_and_pushes_towards_nothing():
    logits = torch.full((1, 8, 8), 30.0, requires_grad=True)  # saturated: predicts anomaly everywhere
    parts = segmentation_losses(logits, -logits, logits, torch.zeros(1, 8, 8))
    total = sum(parts.values())
    assert torch.isfinite(total)
    total.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad > 0).all()
    assert dice_loss(torch.full((1, 4, 4), -30.0), torch.zeros(1, 4, 4)).item() == pytest.approx(0.0, abs=1e-6)


def test_image_term_charges_the_pixels_that_flag_a_good_image():
    """Five confident pixels on a good 64x64 image flag it; pixel BCE barely sees them, the image term does."""
    logits = torch.full((2, 64, 64), -6.0)
    logits[0, 10, 10:15] = 4.0
    good = torch.zeros(2, 64, 64)
    paper = segmentation_losses(logits, -logits, logits, good)
    assert not any(k.startswith("image_") for k in paper)  # weight 0 (the default) is the paper's objective
    parts = segmentation_losses(logits, -logits, logits, good, image_weight=1.0, image_topk=4 / 4096)
    assert set(parts) - set(paper) == {"image_seg", "image_ano"}  # [NOR]'s map is the complement: no decision
    per_image = image_loss(logits, good, topk=4 / 4096)
    assert per_image[0].item() == pytest.approx(torch.nn.functional.softplus(torch.tensor(4.0)).item(), rel=1e-5)
    assert per_image[1].item() == pytest.approx(torch.nn.functional.softplus(torch.tensor(-6.0)).item(), rel=1e-4)
    assert per_image[0] > 100 * bce_loss(logits, good)[0]
    bad = good.clone()
    bad[:, 30:34, 30:34] = 1  # an anomalous image is charged while its top pixels stay below 0.5
    assert image_loss(logits, bad, topk=4 / 4096)[1].item() == pytest.approx(6.0, rel=1e-2)


def test_good_image_term_charges_only_good_images_hottest_pixels():
    """Five confident pixels on a good 64x64 image: the smoothed Dice has saturated on them, this term has
    not; a defective image, whatever its peak, is left to the paper's losses."""
    logits = torch.full((2, 64, 64), -6.0, requires_grad=True)
    with torch.no_grad():
        logits[0, 10, 10:15] = 4.0
    good = torch.zeros(2, 64, 64)
    bad = good.clone()
    bad[1, 30:34, 30:34] = 1
    per_image = normal_loss(logits, bad, topk=5 / 4096)
    assert per_image[0].item() == pytest.approx(torch.nn.functional.softplus(torch.tensor(4.0)).item(), rel=1e-5)
    assert per_image[1].item() == 0.0
    paper = segmentation_losses(logits, -logits, logits, bad)
    parts = segmentation_losses(logits, -logits, logits, bad, normal_weight=2.0, normal_topk=5 / 4096)
    assert set(parts) - set(paper) == {"normal_seg", "normal_ano"}
    assert parts["normal_seg"].item() == pytest.approx(normal_loss(logits, bad, topk=5 / 4096).sum().item())
    dice_grad, = torch.autograd.grad(paper["dice_seg"], logits, retain_graph=True)
    term_grad, = torch.autograd.grad(parts["normal_seg"], logits)
    assert term_grad[0, 10, 10] > 1000 * dice_grad[0, 10, 10] > 0
    assert (term_grad[1] == 0).all()


def test_defect_term_charges_the_defects_own_pixels_not_the_maps_peak():
    """A defective image whose map peaks outside the defect: the term reaches only pixels inside the mask,
    at most the defect's own size of them; a good image is left alone."""
    logits = torch.full((3, 64, 64), -2.0, requires_grad=True)
    with torch.no_grad():
        logits[0, 0, 0] = 8.0  # the peak, a false positive outside the defect
        logits[0, 30, 30] = 3.0
    masks = torch.zeros(3, 64, 64)
    masks[0, 30:40, 30:40] = 1  # 100 pixels, more than k = 41
    masks[1, 5, 5] = 1  # one pixel, fewer than k
    per_image = defect_loss(logits, masks, topk=0.01)
    softplus = torch.nn.functional.softplus
    inside = (softplus(torch.tensor(-3.0)) + 40 * softplus(torch.tensor(2.0))) / 41  # 3.0 and 40 of the -2.0s
    assert per_image[0].item() == pytest.approx(inside.item())
    assert per_image[1].item() == pytest.approx(softplus(torch.tensor(2.0)).item())
    assert per_image[2].item() == 0.0
    grad, = torch.autograd.grad(per_image.sum(), logits)
    assert grad[0, 0, 0] == 0 and grad[0, 30, 30] < 0 and (grad[2] == 0).all()
    assert (grad[0] != 0).sum() == 41 and (grad[1] != 0).sum() == 1
    parts = segmentation_losses(logits, -logits, logits, masks, defect_weight=1.0)
    assert {k for k in parts if k.startswith("defect_")} == {"defect_seg", "defect_ano"}


def test_normal_image_in_a_batch_has_finite_loss(tiny):
    batch = batch_for(tiny, n=2, masks=torch.zeros(2, 64, 64))
    out = tiny(**batch)
    assert torch.isfinite(out.loss) and all(torch.isfinite(v) for v in out.loss_parts.values())


def _grad_report(model):
    model.train()
    batch = batch_for(model, n=2)
    model.zero_grad(set_to_none=True)
    model(**batch).loss.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    missing = [n for n, p in trainable.items() if p.grad is None]
    leaked = [n for n, p in frozen.items() if p.grad is not None]
    return trainable, frozen, missing, leaked


def test_tiny_trains_everything_it_uses(tiny_backbones):
    model = build(preset_config("tiny"), tiny_backbones)
    trainable, frozen, missing, leaked = _grad_report(model)
    assert not missing and not leaked
    assert all("post_layernorm" in n or "image_newline" in n for n in frozen)  # unused by AG-VAS


@pytest.mark.parametrize("variant", ["agvas", "lisa"])
def test_real_policy_freezes_backbones_and_trains_lora_and_anchor_rows(tiny_backbones, variant):
    model = build(frozen_config(tiny_backbones, variant), None)
    assert isinstance(model.base_lmm, LlavaOnevisionForConditionalGeneration)
    trainable, frozen, missing, leaked = _grad_report(model)
    assert not missing, missing
    assert not leaked, leaked
    for name in trainable:
        assert (name.startswith(("spam.", "refiner.", "decoder.")) or "lora_" in name
                or "trainable_tokens" in name), f"unexpectedly trainable: {name}"
    assert any("lora_B" in n and "language_model" in n for n in trainable)
    assert not any("vision_tower" in n for n in trainable)
    rows = [p for n, p in trainable.items() if "trainable_tokens" in n]
    assert rows and all(p.shape[0] == len(model.config.anchors) for p in rows)
    assert any(p.grad.abs().sum() > 0 for p in rows)
    assert all(not p.requires_grad for p in model.pixel_encoder.parameters())


def test_llava15_family_with_tied_embeddings(tiny_backbones, tmp_path):
    import shutil

    # llava-hf's LLaVA-1.5 tokenizer has no chat template of its own: the Vicuna one is supplied.
    folder = tmp_path / "llava15"
    shutil.copytree(tiny_backbones / "llava15", folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    model = build(dataclasses.replace(frozen_config(tiny_backbones), lmm=str(folder)), None)
    text = model.tokenizer.apply_chat_template(conversation(), tokenize=False)
    assert text.startswith("A chat between") and "USER: <image>" in text and "ASSISTANT: Sure, it is" in text
    assert isinstance(model.base_lmm, LlavaForConditionalGeneration)
    # CLIP tower: layer -2 with the CLS token dropped.
    assert model.semantic_encoder.num_tokens == (112 // 14) ** 2
    _, _, missing, leaked = _grad_report(model)
    assert not missing and not leaked


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variants(tiny_backbones, variant):
    model = build(preset_config("tiny", variant), tiny_backbones)
    cfg = model.config
    batch = batch_for(model, n=1)
    with torch.no_grad():
        out = model(**batch)
    assert out.anchor_found.all()
    assert (out.seg_logits is not None) == (SEG in cfg.anchors)
    assert (out.ano_logits is not None) == (ANO in cfg.anchors)
    n_sem = model.semantic_encoder.num_tokens
    assert model.processor.num_image_tokens == (2 * n_sem if cfg.use_spam else n_sem)
    assert (model.spam is None) == (not cfg.use_spam)
    p, _, _ = model.probability_maps(out)
    assert p.shape == (1, 64, 64)


def test_agmd_matches_transformers_sam_transformer():
    """A peer check: our two-way transformer with SAM's weights = transformers' SamTwoWayTransformer."""
    from agvas.model.tiny import build_tiny_sam

    torch.manual_seed(0)
    sam = build_tiny_sam().eval()
    cfg = sam.config.mask_decoder_config
    ours = TwoWayTransformer(cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.mlp_dim).eval()
    ours.load_state_dict(sam.mask_decoder.transformer.state_dict())
    theirs: SamTwoWayTransformer = sam.mask_decoder.transformer
    tokens = torch.randn(2, 6, cfg.hidden_size)
    image = torch.randn(2, cfg.hidden_size, 8, 8)
    pe = torch.randn(2, cfg.hidden_size, 8, 8)
    with torch.no_grad():
        q_ref, k_ref = theirs(tokens.unsqueeze(1), image, pe, attention_similarity=None)
        q, k = ours(tokens, image, pe)
    torch.testing.assert_close(q, q_ref.squeeze(1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k, k_ref.squeeze(1), rtol=1e-5, atol=1e-5)

    dec = AnchorGuidedMaskDecoder(ANCHOR_TOKENS, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads,
                                  cfg.mlp_dim)
    dec.load_sam_mask_decoder(sam.mask_decoder, sam.shared_image_embedding.positional_embedding,
                              sam.prompt_encoder.no_mask_embed.weight)
    grid = sam.config.prompt_encoder_config.image_embedding_size
    torch.testing.assert_close(dec.pe(grid, grid), sam.get_image_wide_positional_embeddings())
    torch.testing.assert_close(dec.query_tokens.weight, sam.mask_decoder.mask_tokens.weight[:3])


def test_ten_steps_lower_the_loss(tiny_backbones):
    model = build(preset_config("tiny"), tiny_backbones).train()
    torch.manual_seed(0)
    batch = batch_for(model, n=1, masks=square_mask().unsqueeze(0))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses, seg = [], []
    for _ in range(10):
        opt.zero_grad()
        out = model(**batch)
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
        seg.append(sum(v.item() for k, v in out.loss_parts.items() if k != "text_ce"))
    assert losses[-1] < 0.8 * losses[0], losses
    assert seg[-1] < seg[0], seg  # the masks improve, not only the text


def test_round_trip_tiny(tiny, tmp_path):
    batch = batch_for(tiny, n=2)
    with torch.no_grad():
        before = tiny(**batch)
    tiny.save_pretrained(tmp_path / "ckpt")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left
    loaded = type(tiny).from_pretrained(tmp_path / "ckpt").eval()
    with torch.no_grad():
        after = loaded(**batch)
    assert torch.equal(before.logits, after.logits)
    assert torch.equal(before.seg_logits, after.seg_logits)
    assert torch.equal(tiny.binary_mask(tiny.probability_maps(before)[0]),
                       loaded.binary_mask(loaded.probability_maps(after)[0]))


def test_round_trip_frozen_backbones_with_lora(tiny_backbones, tmp_path):
    model = build(frozen_config(tiny_backbones), None)
    # Make LoRA and the anchor rows non-trivial, as after training.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad and ("lora_B" in n or "trainable_tokens" in n):
                p.add_(0.05 * torch.randn_like(p))
    batch = batch_for(model, n=2)
    with torch.no_grad():
        before = model(**batch)
    model.save_pretrained(tmp_path / "ckpt")
    files = {p.name for p in (tmp_path / "ckpt").iterdir()}
    assert {"agvas_config.json", "model.safetensors", "adapter", "tokenizer_config.json"} <= files
    assert "lmm" not in files  # frozen backbones are referenced, not copied
    loaded = type(model).from_pretrained(tmp_path / "ckpt").eval()
    with torch.no_grad():
        after = loaded(**batch)
    assert torch.equal(before.logits, after.logits)
    assert torch.equal(before.seg_logits, after.seg_logits)


def test_tiny_hf_checkpoints_load_as_real_ones(tiny_backbones):
    """The folders written by save_pretrained are what a user's downloaded checkpoints look like."""
    assert LlavaOnevisionForConditionalGeneration.from_pretrained(tiny_backbones / "lmm") is not None
    assert SamModel.from_pretrained(tiny_backbones / "sam") is not None
    model = build(frozen_config(tiny_backbones), None)
    assert model.backbone_paths == {"lmm": str(tiny_backbones / "lmm"), "sam": str(tiny_backbones / "sam")}
    assert model.processor.semantic.size == 96 and model.processor.pixel.size == 256


def test_missing_checkpoint_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        build(preset_config("llava-ov-0.5b", lmm=str(tmp_path / "nope"), sam=str(tmp_path / "nope")))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        from agvas.model.agvas import AGVASModel

        AGVASModel.from_pretrained(tmp_path / "missing")


def test_wrong_architecture_is_a_clear_error(tiny_backbones, tmp_path):
    cfg = preset_config("llava-ov-0.5b", lmm=str(tiny_backbones / "sam"), sam=str(tiny_backbones / "sam"))
    with pytest.raises(CheckpointError, match="'sam' checkpoint.*LMM must be one of"):
        build(cfg)
    (tmp_path / "agvas_config.json").write_text('{"architecture": "lisa", "lmm": "x", "sam": "y"}')
    with pytest.raises(ValueError, match="architecture is 'lisa'"):
        from agvas.model.config import AGVASConfig

        AGVASConfig.load(tmp_path)
    (tmp_path / "agvas_config.json").write_text('{"architecture": ')  # a torn write
    with pytest.raises(ValueError, match="agvas_config.json: not readable as JSON"):
        AGVASConfig.load(tmp_path)


def test_bad_images_are_clear_errors(tiny):
    with pytest.raises(TypeError, match="uint8"):
        tiny.processor.preprocess_images([torch.rand(3, 8, 8)])
    import numpy as np

    with pytest.raises(TypeError, match="HxWx3"):
        tiny.processor.preprocess_images([np.zeros((8, 8), dtype=np.uint8)])
    with pytest.raises(ValueError, match="exactly once"):
        tiny.processor.encode([{"role": "user", "content": "no image here"}])


def test_any_image_size_and_aspect(tiny):
    import numpy as np

    pix = tiny.processor.preprocess_images([np.zeros((50, 200, 3), dtype=np.uint8)])
    assert pix["sam_pixels"].shape[-2:] == (256, 256)
    assert pix["resized_sizes"].tolist() == [[64, 256]]
    assert pix["original_sizes"].tolist() == [[50, 200]]


def test_loss_of_a_batch_is_the_mean_of_its_halves(tiny):
    """Per-sample normalisation: splitting a batch (micro-batches, processes) never reweights samples."""
    short = conversation()
    long = [{"role": "user", "content": f"{IMAGE_PLACEHOLDER}\nWhat anomalies are present? Describe them."},
            {"role": "assistant", "content": "A long thin scratch runs across the centre, as shown by "
             "[NOR][ANO][SEG]."}]
    vqa = [{"role": "user", "content": f"{IMAGE_PLACEHOLDER}\nHow many shapes?"},
           {"role": "assistant", "content": "Three."}]
    images = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    masks = torch.stack([square_mask(), torch.zeros(64, 64), square_mask(), torch.zeros(64, 64)])
    convs, has = [short, long, vqa, long], torch.tensor([True, True, False, True])

    def loss(sl):
        batch = tiny.processor({"images": images[sl], "conversations": convs[sl], "masks": masks[sl],
                                "has_mask": has[sl]})
        with torch.no_grad():
            return tiny(**batch).loss_parts

    whole, a, b = loss(slice(0, 4)), loss(slice(0, 2)), loss(slice(2, 4))
    for key in whole:
        assert whole[key].item() == pytest.approx((a[key].item() + b[key].item()) / 2, rel=1e-4, abs=1e-6), key


@pytest.mark.parametrize(("add", "attribute", "flag"), [("add_fine_branch", "fine", "fine_branch"),
                                                         ("add_self_reference", "reference", "self_reference")])
def test_an_added_part_starts_as_a_no_op_then_learns_and_round_trips(tiny, tmp_path, add, attribute, flag):
    """Added to a trained model, the fine branch and the self-reference cues change nothing until trained (their
    projections start at zero); they are trained with the decoder's losses, saved in model.safetensors and
    loaded back."""
    batch = batch_for(tiny, n=2, masks=torch.stack([square_mask(), square_mask()]))
    with torch.no_grad():
        before = tiny(**batch)
    model = type(tiny).from_pretrained(tiny.save_pretrained(tmp_path / "plain")).train()
    getattr(model, add)()
    part = getattr(model, attribute)
    assert getattr(model.config, flag) and model.added_modules()[attribute] is part
    with torch.no_grad():
        assert torch.equal(model.eval()(**batch).seg_logits, before.seg_logits)

    model.train().zero_grad()
    model(**batch).loss.backward()
    assert part.proj.weight.grad.abs().sum() > 0  # the heads' losses reach it
    opt = torch.optim.SGD(part.parameters(), lr=1.0)
    opt.step()
    model.eval()
    with torch.no_grad():
        trained = model(**batch)
    assert not torch.equal(trained.seg_logits, before.seg_logits)

    loaded = type(tiny).from_pretrained(model.save_pretrained(tmp_path / attribute)).eval()
    assert getattr(loaded.config, flag)
    with torch.no_grad():
        assert torch.equal(loaded(**batch).seg_logits, trained.seg_logits)


def test_a_fine_branch_needs_the_pixels(tiny, tmp_path):
    model = type(tiny).from_pretrained(tiny.save_pretrained(tmp_path / "plain"))
    model.add_fine_branch()
    hidden = torch.zeros(1, 4, tiny.lmm.config.text_config.hidden_size)
    with pytest.raises(ValueError, match="fine branch .* needs sam_pixels"):
        model.decode_masks(hidden, torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 64, 16, 16))


def test_rarity_is_high_only_where_a_patch_has_no_look_alike():
    """On a grid of identical patches with one odd 2x1 blob, the blob's cells are the rare ones: their
    neighbourhood (each other) does not count, the rest of the grid does not resemble them."""
    from agvas.model.reference import neighbourhood, rarity

    keys = torch.zeros(1, 8 * 8, 2)
    keys[..., 0] = 1.0
    odd = [3 * 8 + 4, 3 * 8 + 5]
    keys[0, odd] = torch.tensor([0.0, 1.0])
    rare = rarity(keys, 8, 8, k=3)[0]
    assert torch.allclose(rare[odd], torch.ones(2)) and torch.allclose(rare[[0, 20, 63]], torch.zeros(3))
    assert rarity(torch.nn.functional.normalize(torch.ones(1, 64, 2), dim=-1), 8, 8, k=3).abs().max() < 1e-6
    near = neighbourhood(3, 3, 1)
    assert near[4].all() and near[0].sum() == 4 and not near[0, 8]


def test_self_reference_cues_separate_a_rare_patch_from_a_common_one():
    """The module's own cues, on a feature map that is uniform but for one patch: that patch alone has
    rarity above the others, and its relative rarity is the only positive one."""
    from agvas.model.reference import SelfReference

    torch.manual_seed(0)
    module = SelfReference(16, key_dim=8)
    pixel = torch.randn(1, 16, 1, 1).expand(1, 16, 6, 6).clone()
    pixel[0, :, 2, 3] = torch.randn(16)
    cues = module.cues(pixel)[0]
    rare, relative = cues[:, 0], cues[:, 1]
    assert rare.argmax() == 2 * 6 + 3 and rare[2 * 6 + 3] > 0.1
    assert (relative > 1e-6).sum() == 1 and module(pixel).shape == pixel.shape


def test_the_fine_branch_sees_detail_inside_a_patch():
    """Two images that differ only inside one 16-pixel patch give the same upscaled grid without the branch;
    with it, the stride-4 cells that hold the difference differ, the others far from it do not."""
    from agvas.model.fine import FineBranch

    torch.manual_seed(0)
    branch = FineBranch(8)
    torch.nn.init.normal_(branch.proj.weight)
    a = torch.zeros(1, 3, 64, 64)
    b = a.clone()
    b[..., 20:22, 20:22] = 1.0  # a 2-pixel dot inside the patch at rows/cols 16..31
    diff = (branch(a) - branch(b)).abs().sum(1)[0]
    assert diff.shape == (16, 16)  # stride 4: AGMD's upscaled grid
    assert diff[5, 5] > 0 and diff[0, 0] == 0 and diff[12:, 12:].abs().sum() == 0
