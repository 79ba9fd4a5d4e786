"""The real presets built offline from the shipped architecture facts, with random weights."""

from __future__ import annotations

import pytest
import torch

from agvas.model.build import build_model
from agvas.model.stand_in_tokenizer import stand_in_tokenizer

# Unique parameters (each tensor once) and trainable ones, per preset. The backbones' own totals agree
# with the Hub's published counts: LLaVA-OV-0.5B 894 M, LLaVA-OV-7B 8.03 B, LLaVA-1.5-13B 13.4 B,
# SAM ViT-B 93.7 M and ViT-H 641 M (of which the image encoders are 89.7 M and 637 M).
EXPECTED = {
    "llava-ov-0.5b": (992_694_624, 9_348_160, 399_584_544 + 495_174_144 + 896, 89_670_912),
    "llava-ov-7b": (8_742_769_120, 74_935_488, 414_728_736 + 7_075_905_536 + 545_237_504 + 3584, 637_026_048),
    "llava-1.5-13b": (14_139_168_704, 150_648_000, 334_974_976 + 12_865_474_560 + 164_183_040, 637_026_048),
}


@pytest.mark.parametrize("preset", list(EXPECTED))
def test_real_presets_on_meta_count_each_parameter_once(preset):
    model = build_model(preset, random_init=True, device="meta")
    rows = dict((name, (n, t)) for name, n, t in model.parameter_table())
    total, trainable, lmm, sam_encoder = EXPECTED[preset]
    unique = {id(p): p for p in model.parameters()}
    assert sum(n for n, _ in rows.values()) == total == sum(p.numel() for p in unique.values())
    assert sum(t for _, t in rows.values()) == trainable
    assert sum(p.numel() for p in model.base_lmm.parameters()) >= lmm  # + LoRA and anchor rows
    assert rows["pixel encoder (SAM image encoder)"][0] == sam_encoder
    assert all(p.device.type == "meta" for p in model.parameters())
    llm = {id(p) for p in model.base_lmm.model.language_model.parameters()}
    tied = all(id(p) in llm for p in model.base_lmm.lm_head.parameters())
    assert tied == (preset == "llava-ov-0.5b")
    if tied:
        assert rows["LM head (tied to the input embeddings)"] == (0, 0)


def test_tokenizer_stand_ins_have_the_real_sizes_and_ids():
    qwen = stand_in_tokenizer("qwen2")
    assert len(qwen) == 151_648
    assert qwen.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]) == \
        [151_643, 151_644, 151_645, 151_646, 151_647]
    assert (qwen.eos_token, qwen.pad_token) == ("<|im_end|>", "<|endoftext|>")
    llama = stand_in_tokenizer("llama")
    assert len(llama) == 32_002
    assert llama.convert_tokens_to_ids(["<unk>", "<s>", "</s>", "<image>", "<pad>"]) == [0, 1, 2, 32_000, 32_001]
    text = "<image>\nPlease segment the anomalies in this image."
    for tok in (qwen, llama):
        ids = tok(text, add_special_tokens=False).input_ids
        assert tok.decode(ids) == text and max(ids) < len(tok)


SHRINK = {"lmm": {"text_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                  "num_attention_heads": 4, "num_key_value_heads": 2},
                  "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                    "num_attention_heads": 2, "image_size": 112}},
          "sam": {"vision_config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                    "global_attn_indexes": [1], "mlp_dim": 64, "image_size": 256}}}


def test_random_init_writes_loadable_backbones_and_keeps_the_real_layout(tmp_path):
    model = build_model("llava-ov-0.5b", random_init=True, backbone_dir=tmp_path / "bb",
                        architecture_overrides=SHRINK, spam_heads=4, decoder_heads=4)
    lmm = model.base_lmm
    assert lmm.config.image_token_id == 151_646 and lmm.config.text_config.vocab_size == 152_000
    assert len(model.tokenizer) == 151_648 + 3  # the anchors follow the real vocabulary
    assert model.semantic_encoder.num_tokens == (112 // 14) ** 2
    assert model.processor.semantic.mean == (0.5, 0.5, 0.5)
    assert model.processor.pixel.std == (0.229, 0.224, 0.225)
    assert model.config.lmm == str((tmp_path / "bb" / "lmm").resolve())
    # In memory (no backbone_dir), the model has no files behind it and refuses to save a checkpoint.
    loose = build_model("llava-ov-0.5b", random_init=True, architecture_overrides=SHRINK, spam_heads=4,
                        decoder_heads=4)
    assert not any(p.device.type == "meta" for p in loose.parameters())
    with pytest.raises(ValueError, match="random-init"):
        loose.save_pretrained(tmp_path / "ckpt")
    torch.testing.assert_close(sum(p.numel() for p in loose.parameters()),
                               sum(p.numel() for p in model.parameters()))
    # SAM's vision weights are drawn at a usable scale, not the published config's 1e-10
    weights = [p for n, p in loose.named_parameters() if "pixel" in n and n.endswith("qkv.weight")]
    assert weights and all(0.01 < float(w.std()) < 0.05 for w in weights)


def test_model_info_and_bench_take_random_init(tmp_path):
    import json

    from typer.testing import CliRunner

    from agvas.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["model", "info", "--preset", "llava-1.5-13b", "--random-init"])
    assert res.exit_code == 0, res.output
    assert "meta device" in res.output and "14,139,168,704" in res.output and "total (unique)" in res.output
    res = runner.invoke(app, ["bench", "--preset", "tiny", "--random-init", "--images", "1", "--repeats", "1",
                              "--size", "64", "--out", str(tmp_path / "b.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "b.json").read_text())["checkpoint"].startswith("preset:tiny (untrained, random")
    res = runner.invoke(app, ["bench", "--checkpoint", str(tmp_path), "--random-init", "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "random_init needs a preset name" in res.output
