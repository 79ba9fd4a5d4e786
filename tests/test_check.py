"""`agvas check`'s code path on a shrunken random-init llava-ov-0.5b (the real-size run is docs/check-*.json).

What this covers: the same `run_check` as the real-size command — random backbones written and loaded
through save_pretrained/from_pretrained, the real vocabulary (152 000 rows) and image token id, the
paper's training policy with LoRA r16, one AdamW step with the gradient-set check, the checkpoint round
trip compared bit for bit, and all five modes. What it does not: the real widths, depths and input
sizes (SigLIP at 112 px with one layer, a 2-layer 64-wide Qwen2, SAM at 256 px), so neither the speed
nor the memory of the real run.
"""

from __future__ import annotations

import json

import pytest
from test_architectures import SHRINK

from agvas.check.run import CheckFailed, gradient_report, policy_report, run_check


def test_check_runs_every_stage_on_a_shrunken_real_preset(tmp_path):
    report = run_check("llava-ov-0.5b", workdir=tmp_path, image_size=96, max_new_tokens=3,
                       architecture_overrides=SHRINK, spam_heads=4, decoder_heads=4)
    json.dumps(report)
    stages = report["stages"]
    assert list(stages) == ["build", "train_step", "save_load", "modes"]
    assert all(s["seconds"] >= 0 and s["peak_rss_mib"] > 0 for s in stages.values())
    build = stages["build"]
    assert build["policy"]["lora_ranks"] == [16] and not build["policy"]["violations"]
    assert build["llm"]["vocab"] == 152_000 and build["llm"]["tokenizer_length"] == 151_651
    assert build["image_tokens"] == 2 * (112 // 14) ** 2
    assert stages["train_step"]["gradients_reach_exactly_the_trainable_set"]
    assert stages["train_step"]["trainable_tensors_changed_by_step"] == build["policy"]["trainable_tensors"]
    assert stages["save_load"]["bit_identical"] and "model.safetensors" in stages["save_load"]["files"]
    assert any(f.startswith("adapter/") for f in stages["save_load"]["files"])
    modes = stages["modes"]
    assert modes["modes_run"] == ["direct_fast", "direct_generation", "describe", "describe-plus", "explain",
                                  "chat"]
    assert report["passed"] and report["peak_rss_mib"] > 0


def test_the_gradient_and_policy_checks_catch_violations(tmp_path):
    from agvas.model.build import build_model

    model = build_model("llava-ov-0.5b", random_init=True, architecture_overrides=SHRINK, spam_heads=4,
                        decoder_heads=4)
    assert not policy_report(model)["violations"]
    model.pixel_encoder.requires_grad_(True)
    assert "pixel encoder is trainable" in policy_report(model)["violations"]
    model.pixel_encoder.requires_grad_(False)
    assert set(gradient_report(model)["missing"]) == {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = next(p for p in model.semantic_encoder.parameters())
    frozen.grad = frozen.detach().clone()
    assert gradient_report(model)["leaked"]
    with pytest.raises(CheckFailed):
        raise CheckFailed("importable")
