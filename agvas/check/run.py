"""One run through everything a user will do at the paper's scale, with each stage timed and checked.

Shape, dtype, memory and speed bugs of the real sizes otherwise first surface in a user's GPU run. The
stages, in order, each recording its wall seconds and the process's peak RSS when it ended:

1. build: random backbones of the preset written with `save_pretrained` and loaded back; the paper's
   training policy checked (frozen encoders, projector and LLM; LoRA of the configured rank on the LLM's
   q/v only; trainable SPAM, Token Refiner, AGMD and anchor rows, nothing else);
2. train_step: one forward + backward + AdamW step on one image with a mask; gradients must reach
   exactly the trainable set (every trainable tensor has a non-zero gradient, no frozen one has any)
   and the step must change every trainable tensor;
3. save_load: the checkpoint (adapter/ + model.safetensors) saved and loaded; every tensor of the
   loaded model bit-identical to the saved one (compared by digest, so two models never coexist);
4. modes: direct (fast path and generation), describe, describe-plus, explain and a chat turn on one
   image. The encoders run once per end-to-end call of the two direct paths; the generating modes after
   them reuse that image's features (as a chat session does), so their time is LLM prefill + decoding.

Frozen backbones are random, so generated answers are noise: generation is capped at a few tokens, and
what is checked is that every mode runs and returns maps of the image's size, not what it says.
"""

from __future__ import annotations

import hashlib
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from torch import nn

from agvas.anchors import DIRECT_INSTRUCTION, IMAGE_PLACEHOLDER, direct_answer
from agvas.infer.bench import answer_steps, peak_rss_mib
from agvas.infer.segmenter import Segmenter
from agvas.model.agvas import AGVASModel
from agvas.model.build import build_model
from agvas.model.random_init import Overrides

TRAINABLE_PREFIXES = ("spam.", "refiner.", "decoder.")
EXPECTATION = "A normal surface is smooth and uniform, without scratches or stains."


class CheckFailed(AssertionError):
    """A stage ran but its result broke what the paper's policy or the checkpoint format promise."""


def _stage(report: dict, name: str, fn: Callable[[], dict], progress: Callable[[str], None]) -> Any:
    progress(name)
    start = time.perf_counter()
    out = fn()
    report["stages"][name] = {"seconds": round(time.perf_counter() - start, 2),
                              "peak_rss_mib": round(peak_rss_mib(), 1), **out}
    return out


def policy_report(model: AGVASModel) -> dict:
    """Which tensors train, grouped, and any that break the paper's policy (`violations`)."""
    cfg = model.config
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    violations = [n for n in trainable if not (n.startswith(TRAINABLE_PREFIXES) or "lora_" in n
                                               or "trainable_tokens" in n)]
    lora = [n for n in trainable if "lora_" in n]
    violations += [n for n in lora if "language_model" not in n or not any(f".{t}." in n for t in cfg.lora_targets)]
    ranks = sorted({min(p.shape) for n, p in trainable.items() if "lora_A" in n})
    rows = [n for n in trainable if "trainable_tokens" in n]
    if not cfg.train_backbones:
        if ranks != [cfg.lora_rank]:
            violations.append(f"LoRA ranks {ranks}, expected [{cfg.lora_rank}]")
        if not rows:
            violations.append("no trainable anchor-token rows")
        violations += [f"{part} is trainable" for part, mod in (("pixel encoder", model.pixel_encoder),
                                                                 ("semantic encoder", model.semantic_encoder))
                       if any(p.requires_grad for p in mod.parameters())]
    counts = {"lora": sum(trainable[n].numel() for n in lora),
              "anchor_rows": sum(trainable[n].numel() for n in rows),
              **{k: sum(p.numel() for p in m.parameters()) for k, m in model.added_modules().items()}}
    return {"trainable_tensors": len(trainable), "trainable_parameters": sum(p.numel() for p in trainable.values()),
            "lora_ranks": ranks, "trainable_by_part": counts, "violations": violations}


def gradient_report(model: AGVASModel) -> dict:
    """Trainable tensors the backward pass did not reach, frozen ones it did, and reached-but-zero ones.

    Zero is not a failure: LoRA's A matrices get exactly zero gradient on the first step, because their
    B matrices start at zero (peft's initialisation), so they are listed apart.
    """
    missing, leaked, zero = [], [], []
    for name, p in model.named_parameters():
        if p.requires_grad and p.grad is None:
            missing.append(name)
        elif p.requires_grad and not bool(p.grad.abs().sum() > 0):
            zero.append(name)
        if not p.requires_grad and p.grad is not None:
            leaked.append(name)
    return {"missing": missing, "leaked": leaked, "zero": zero}


def state_digest(model: nn.Module) -> dict[str, str]:
    """A digest per state-dict entry: bit-identity of two models without holding both in memory."""
    out = {}
    for name, t in model.state_dict().items():
        data = t.detach().contiguous().cpu()
        flat = data.reshape(-1)
        raw = flat.to(torch.uint8) if data.dtype == torch.bool else flat.view(torch.uint8)
        digest = hashlib.blake2b(raw.numpy(), digest_size=16).hexdigest()
        out[name] = f"{data.dtype}:{tuple(data.shape)}:{digest}"
    return out


def _image(size: int, seed: int = 0) -> tuple[np.ndarray, torch.Tensor]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    mask = torch.zeros(size, size)
    mask[size // 4: size // 2, size // 4: size // 2] = 1
    return image, mask


def _train_step(model: AGVASModel, image: np.ndarray, mask: torch.Tensor, lr: float) -> dict:
    model.train()
    conversation = [{"role": "user", "content": f"{IMAGE_PLACEHOLDER}\n{DIRECT_INSTRUCTION}"},
                    {"role": "assistant", "content": direct_answer(model.config.anchors)}]
    batch = model.processor({"images": [torch.from_numpy(image).permute(2, 0, 1)], "conversations": [conversation],
                             "masks": mask[None], "has_mask": torch.ones(1, dtype=torch.bool)})
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(params, lr=lr)
    t0 = time.perf_counter()
    out = model(**batch)
    t1 = time.perf_counter()
    out.loss.backward()
    t2 = time.perf_counter()
    grads = gradient_report(model)
    optimizer.step()
    unchanged = sum(bool(torch.equal(b, p.detach())) for b, p in zip(before, params, strict=True))
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    if grads["missing"] or grads["leaked"] or unchanged or not torch.isfinite(out.loss):
        raise CheckFailed(f"train step: loss {float(out.loss)}, no gradient for {grads['missing'][:5]}, "
                          f"gradient leaked into {grads['leaked'][:5]}, {unchanged} trainable tensors unchanged")
    unexpected_zero = [n for n in grads["zero"] if "lora_A" not in n]
    if unexpected_zero:
        raise CheckFailed(f"train step: zero gradient for {unexpected_zero[:5]}")
    return {"sequence_length": int(batch["input_ids"].shape[1]), "loss": float(out.loss),
            "zero_gradient_tensors": len(grads["zero"]),
            "loss_parts": {k: float(v) for k, v in (out.loss_parts or {}).items()},
            "forward_seconds": round(t1 - t0, 2), "backward_seconds": round(t2 - t1, 2),
            "gradients_reach_exactly_the_trainable_set": True, "trainable_tensors_changed_by_step": len(params)}


def _save_load(holder: dict[str, AGVASModel], folder: Path) -> dict:
    """Replaces holder["model"] by its saved-and-loaded copy; the original is dropped before loading."""
    model = holder.pop("model")
    digest = state_digest(model)
    t0 = time.perf_counter()
    model.save_pretrained(folder)
    saved = time.perf_counter() - t0
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    if "model.safetensors" not in files or not any(f.startswith("adapter/") for f in files):
        raise CheckFailed(f"checkpoint lacks model.safetensors or adapter/: {files}")
    sizes = {f: (folder / f).stat().st_size for f in files if f.endswith(".safetensors")}
    dtype = next(model.parameters()).dtype
    del model
    t1 = time.perf_counter()
    loaded = AGVASModel.from_pretrained(folder, dtype=dtype).eval()
    load_s = time.perf_counter() - t1
    again = state_digest(loaded)
    differ = sorted(k for k in digest.keys() | again.keys() if digest.get(k) != again.get(k))
    if differ:
        raise CheckFailed(f"checkpoint round trip changed {len(differ)} tensors, e.g. {differ[:5]}")
    holder["model"] = loaded
    return {"save_seconds": round(saved, 2), "load_seconds": round(load_s, 2), "files": files,
                    "safetensors_bytes": sizes, "tensors_compared": len(digest), "bit_identical": True}


def _modes(model: AGVASModel, image: np.ndarray, max_new_tokens: int) -> dict:
    with Segmenter.borrowing(model) as seg:
        steps = answer_steps(seg)
        out: dict[str, Any] = {"max_new_tokens": max_new_tokens, "direct_generation_steps": steps}
        timings: dict[str, float] = {}

        def run(name: str, fn: Callable[[], Any]) -> Any:
            t = time.perf_counter()
            result = fn()
            timings[name] = round(time.perf_counter() - t, 2)
            r = result if not isinstance(result, list) else result[0]
            if r.anomaly_map.shape != image.shape[:2] or r.mask.shape != image.shape[:2]:
                raise CheckFailed(f"{name}: maps of shape {r.anomaly_map.shape}, image {image.shape[:2]}")
            return r

        fast = run("direct_fast", lambda: seg.segment([image]))
        gen = run("direct_generation", lambda: seg.segment([image], fast=False, max_new_tokens=steps))
        pixels = seg.prepare_images([image])
        with torch.inference_mode():
            features = (pixels, *seg.encode_images(pixels))
        from agvas.data.templates import inference_conversation

        for mode, expectation in (("describe", None), ("describe-plus", EXPECTATION), ("explain", None)):
            conv = inference_conversation(mode, None, expectation)
            run(mode, lambda conv=conv, mode=mode: seg.segment_generated([image], [conv], mode, [None],
                                                                          max_new_tokens, features=features))
        session = seg.chat(image, max_new_tokens=max_new_tokens)
        session._features = features
        run("chat", lambda: session.ask("Is there an anomaly? Segment it."))
        out["mode_seconds"] = timings
        out["fast_vs_generation_speedup"] = round(timings["direct_generation"] / max(timings["direct_fast"], 1e-9), 3)
        out["direct_generation_reproduced_answer"] = gen.text == fast.text
        out["modes_run"] = list(timings)
        return out


def run_check(preset: str = "llava-ov-0.5b", variant: str = "agvas", *, workdir: str | Path | None = None,
              image_size: int = 512, max_new_tokens: int = 8, lr: float = 1e-4, seed: int = 0,
              architecture_overrides: Overrides | None = None, progress: Callable[[str], None] | None = None,
              **config_overrides) -> dict:
    """Run the stages of this module's docstring; return the report (raises CheckFailed on a broken promise).

    `architecture_overrides` shrink the published architecture (for the test suite's trimmed run);
    `config_overrides` are AGVASConfig fields (e.g. spam_heads for shrunken widths).
    """
    say = progress or (lambda stage: None)
    work = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="agvas-check-"))
    image, mask = _image(image_size, seed)
    report: dict[str, Any] = {
        "preset": preset, "variant": variant, "random_init": True, "image_size": [image_size, image_size],
        "architecture_overrides": architecture_overrides or {}, "device": "cpu", "dtype": "float32",
        "torch_threads": torch.get_num_threads(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__},
        "stages": {},
    }
    start = time.perf_counter()
    holder: dict[str, AGVASModel] = {}

    def build() -> dict:
        model = build_model(preset, variant, random_init=True, backbone_dir=work / "backbones", seed=seed,
                            architecture_overrides=architecture_overrides, **config_overrides).eval()
        holder["model"] = model
        policy = policy_report(model)
        if policy["violations"]:
            raise CheckFailed(f"training policy broken: {policy['violations'][:5]}")
        rows = model.parameter_table()
        lmm = model.base_lmm.config
        return {"parameters_unique": sum(r[1] for r in rows), "parameter_table": [list(r) for r in rows],
                "semantic_input_px": model.processor.semantic.size, "pixel_input_px": model.processor.pixel.size,
                "image_tokens": model.processor.num_image_tokens,
                "llm": {"layers": lmm.text_config.num_hidden_layers, "hidden": lmm.text_config.hidden_size,
                        "vocab": lmm.text_config.vocab_size, "tokenizer_length": len(model.tokenizer)},
                "policy": policy}

    _stage(report, "build", build, say)
    _stage(report, "train_step", lambda: _train_step(holder["model"], image, mask, lr), say)

    _stage(report, "save_load", lambda: _save_load(holder, work / "checkpoint"), say)
    _stage(report, "modes", lambda: _modes(holder["model"], image, max_new_tokens), say)
    report["total_seconds"] = round(time.perf_counter() - start, 2)
    report["peak_rss_mib"] = round(peak_rss_mib(), 1)
    report["passed"] = True
    return report
