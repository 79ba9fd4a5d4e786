"""The inference API: `Segmenter.from_pretrained(...).segment(images, mode=...)`.

Two paths produce the masks:

* the fast path (direct mode, the default there): the answer of direct segmentation is fixed
  ("Sure, it is [NOR][ANO][SEG]."), so it is teacher-forced — one forward over prompt + answer for a whole
  batch, no decoding loop, no vocabulary projection. By causality the anchors' hidden states are those a
  model that generates that answer would compute, so the masks equal the generation path's wherever the
  model does generate the direct answer (tested).
* the generation path (every other mode, and direct with fast=False): greedy decoding with the KV cache;
  the anchors' hidden states are read from the generated answer. Batches are decoded together: every
  image of a call shares one prompt, so prompts need no padding; finished sequences idle until all stop.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from agvas.anchors import direct_answer
from agvas.data.templates import inference_conversation
from agvas.infer.chat import ChatSession
from agvas.infer.decision import Decision
from agvas.infer.generate import greedy_generate
from agvas.infer.images import as_input_list, input_name, load_image
from agvas.infer.loading import load_model, resolve_device, resolve_dtype
from agvas.infer.quantize import check_cpu_int8, quantization_config, quantize_cpu_int8, quantize_language_model
from agvas.infer.result import SegmentationResult, build_results
from agvas.infer.timing import NullTimer
from agvas.model.agvas import AGVASModel
from agvas.model.processor import EncodedText
from agvas.modes import CHAT_MODE, EXPECTATION_HELP, EXPECTATION_MODE, MODES, needs_expectation

DEFAULT_MAX_NEW_TOKENS = 256

Message = dict[str, str]


def check_mode(mode: str, expectation: str | None) -> None:
    """Fail before any image is read or any model runs."""
    if mode == CHAT_MODE:
        raise ValueError("mode 'chat' is a dialogue: use segmenter.chat(image).ask(text) (or `agvas chat IMAGE`)")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)} (or segmenter.chat for dialogue)")
    if needs_expectation(mode, expectation):
        raise ValueError(f"mode '{EXPECTATION_MODE}' needs expectation=: {EXPECTATION_HELP}")


class Segmenter:
    """Runs an AG-VAS model on images; owns the model, its device and precision."""

    def __init__(self, model: AGVASModel, device: str | torch.device | None = None,
                 dtype: str | torch.dtype | None = None, source: str | None = None, quantized: bool = False,
                 cpu_int8: bool = False) -> None:
        """`cpu_int8` converts the backbones' Linear layers of `model` (in place) to dynamic int8 on CPU
        (`agvas.infer.quantize.quantize_cpu_int8`): faster at real size, masks close to fp32's but not equal."""
        self._attach(model.eval().requires_grad_(False), resolve_device(device), dtype, source)
        if cpu_int8:
            check_cpu_int8(self.device, self.dtype)
        # A quantised LLM is already on its device and must not be cast; the rest was built in self.dtype.
        if quantized:
            self.model.to(self.device)
        else:
            self.model.to(device=self.device, dtype=self.dtype)
        if cpu_int8:
            quantize_cpu_int8(self.model)
            self.cpu_int8 = True

    def _attach(self, model: AGVASModel, device: torch.device, dtype: str | torch.dtype | None,
                source: str | None) -> None:
        self.device = device
        self.dtype = resolve_dtype(dtype, device)
        self.model = model
        self.source = source
        self.timer: NullTimer = NullTimer()
        self.cpu_int8 = False
        """Whether the backbones run dynamic int8 (see __init__)."""
        self._prompts: dict[tuple, EncodedText] = {}
        self.decision = Decision(threshold=model.config.threshold)
        """The rule from P to mask and answer; the paper's unless a caller sets another."""

    @classmethod
    @contextmanager
    def borrowing(cls, model: AGVASModel) -> Iterator[Segmenter]:
        """A Segmenter over a model that is being trained, for the trainer's periodic evaluation: the model
        stays where it is, in its precision, with its trainable parameters; only eval mode is set for the
        duration and the previous mode restored after, so training resumes exactly as it was."""
        first = next(model.parameters())
        seg = cls.__new__(cls)
        seg._attach(model, first.device, first.dtype, source=None)
        was_training = model.training
        model.eval()
        try:
            yield seg
        finally:
            model.train(was_training)

    @classmethod
    def from_pretrained(cls, path_or_preset: str | Path | None = None, device: str | torch.device | None = None,
                        dtype: str | torch.dtype | None = None, load_in_8bit: bool = False,
                        load_in_4bit: bool = False, cache_dir: str | Path | None = None,
                        random_init: bool = False, cpu_int8: bool = False) -> Segmenter:
        """A checkpoint folder (default: checkpoints/agvas-tiny of the repository), a Hub id (`owner/name`,
        cached in `cache_dir` or the Hub's default cache) or a preset name (untrained, with a warning;
        `random_init` also draws a real preset's backbones at random, offline).
        8/4-bit applies to the LLM only and needs CUDA + bitsandbytes; `cpu_int8` is the CPU's cheaper
        path (dynamic int8 backbones, see __init__)."""
        dev = resolve_device(device)
        quant = quantization_config(load_in_8bit, load_in_4bit, dev)  # fail before loading anything
        dt = resolve_dtype(dtype, dev) if quant is None else torch.bfloat16
        if cpu_int8:
            check_cpu_int8(dev, dt)
        model, where = load_model(path_or_preset, dt, cache_dir, random_init=random_init)
        if hasattr(model.lmm, "merge_and_unload"):  # LoRA folded into the weights: no adapter cost per token
            model.lmm = model.lmm.merge_and_unload()
        if quant is not None:
            quantize_language_model(model, quant, dev)
        return cls(model, dev, dt, source=where, quantized=quant is not None, cpu_int8=cpu_int8)

    # ---- public API -------------------------------------------------------------------------------
    @property
    def anchors(self) -> tuple[str, ...]:
        return self.model.config.anchors

    def segment(self, images: Any, instruction: str | None = None, mode: str = "direct",
                expectation: str | None = None, batch_size: int = 8, fast: bool = True,
                max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                decision: Decision | None = None) -> list[SegmentationResult]:
        """One result per image, in input order.

        `images`: a path, folder, glob, PIL image, numpy array or tensor, or a list of them. `fast` only
        affects direct mode (the other modes' answers are not known in advance and are generated).
        `decision` overrides `self.decision` (threshold on P, minimum mask area) for this call.
        """
        rule = decision or self.decision
        check_mode(mode, expectation)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        items = as_input_list(images)
        conversation = inference_conversation(mode, instruction, expectation)
        results: list[SegmentationResult] = []
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            with self.timer("preprocess"):
                arrays = [load_image(x, input_name(x, start + i)) for i, x in enumerate(chunk)]
            names = [input_name(x, start + i) if isinstance(x, str | Path) else None for i, x in enumerate(chunk)]
            if mode == "direct" and fast:
                results += self.segment_teacher_forced(arrays, conversation, names)
            else:
                results += self.segment_generated(arrays, [conversation] * len(arrays), mode, names,
                                                  max_new_tokens)
        if rule != Decision(threshold=self.model.config.threshold):
            results = [rule.apply(r) for r in results]
        return results

    def chat(self, image: Any, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> ChatSession:
        """A multi-turn dialogue about one image (see ChatSession)."""
        return ChatSession(self, image, max_new_tokens=max_new_tokens)

    # ---- the two paths ----------------------------------------------------------------------------
    @torch.inference_mode()
    def segment_teacher_forced(self, arrays: Sequence[np.ndarray], conversation: list[Message],
                               names: Sequence[str | None]) -> list[SegmentationResult]:
        """Direct mode: one forward over prompt + the fixed answer, cut right after the last anchor."""
        model, proc = self.model, self.model.processor
        answer = direct_answer(self.anchors)
        with self.timer("preprocess"):
            enc = self._teacher_forced_ids(conversation, answer)
            batch = proc.pad([enc] * len(arrays))
            ids, attn = batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)
            pixels = self.prepare_images(arrays)
        f_s, f_p = self.encode_images(pixels)
        with self.timer("spam"):
            embeds = model.embed_inputs(ids, f_s, f_p)
        with self.timer("llm"):
            hidden, _ = model.llm_hidden(embeds, None if bool(attn.all()) else attn, use_cache=False)
        with self.timer("agmd"):
            decoded, found = model.decode_masks(hidden, ids, f_p, pixels["sam_pixels"])
        with self.timer("postprocess"):
            return build_results(model, decoded, found, pixels["resized_sizes"], pixels["original_sizes"],
                                 [answer] * len(arrays), "direct", list(names))

    @torch.inference_mode()
    def segment_generated(self, arrays: Sequence[np.ndarray], conversations: Sequence[list[Message]], mode: str,
                          names: Sequence[str | None], max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                          features: tuple[dict[str, Tensor], Tensor, Tensor] | None = None,
                          ) -> list[SegmentationResult]:
        """Greedy KV-cached decoding; prompts of different lengths are left-padded."""
        model, proc = self.model, self.model.processor
        with self.timer("preprocess"):
            encoded = [proc.encode(c, add_generation_prompt=True) for c in conversations]
            ids, attn = self.left_pad([e.input_ids for e in encoded])
            pixels = features[0] if features is not None else self.prepare_images(arrays)
        f_s, f_p = features[1:] if features is not None else self.encode_images(pixels)
        with self.timer("spam"):
            embeds = model.embed_inputs(ids, f_s, f_p)
        budget = self._token_budget(ids.shape[1], max_new_tokens)
        gen = greedy_generate(model, embeds, attn, budget, self.timer)
        with self.timer("agmd"):
            decoded, found = model.decode_masks(gen.hidden, gen.answer_ids, f_p, pixels["sam_pixels"])
        with self.timer("postprocess"):
            texts = [model.tokenizer.decode(t, skip_special_tokens=False).strip() for t in gen.tokens]
            results = build_results(model, decoded, found, pixels["resized_sizes"], pixels["original_sizes"],
                                    texts, mode, list(names))
            for r, stopped in zip(results, gen.stopped, strict=True):
                if not stopped:
                    extra = f"the answer was cut at max_new_tokens={budget}"
                    r.note = f"{r.note}; {extra}" if r.note else extra
        return results

    # ---- pieces -----------------------------------------------------------------------------------
    def _teacher_forced_ids(self, conversation: list[Message], answer: str) -> EncodedText:
        """Prompt + answer cut right after the last anchor (later tokens cannot change the anchors' states);
        cached, since every call of a run renders the same template."""
        key = (answer, *((m["role"], m["content"]) for m in conversation))
        if key not in self._prompts:
            enc = self.model.processor.encode([*conversation, {"role": "assistant", "content": answer}])
            positions, found = self.model.anchor_positions(torch.tensor([enc.input_ids]))
            if not bool(found.all()):
                raise ValueError(f"the direct answer {answer!r} does not tokenise to the model's anchors")
            end = int(positions.max()) + 1
            self._prompts[key] = EncodedText(enc.input_ids[:end], enc.labels[:end])
        return self._prompts[key]

    def prepare_images(self, arrays: Sequence[np.ndarray]) -> dict[str, Tensor]:
        pix = self.model.processor.preprocess_images(list(arrays))
        for key in ("semantic_pixels", "sam_pixels"):
            pix[key] = pix[key].to(self.device, self.dtype)
        return pix

    def encode_images(self, pixels: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        with self.timer("semantic_encoder"):
            f_s = self.model.semantic_encoder(pixels["semantic_pixels"])
        with self.timer("pixel_encoder"):
            f_p = self.model.encode_pixels(pixels["sam_pixels"])
        return f_s, f_p

    def left_pad(self, rows: Sequence[list[int]]) -> tuple[Tensor, Tensor]:
        """Token rows -> left-padded ids and attention mask, so every prompt ends where generation starts."""
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.model.processor.pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, length - len(r):] = torch.tensor(r)
            attn[i, length - len(r):] = 1
        return ids.to(self.device), attn.to(self.device)

    def _token_budget(self, prompt_len: int, max_new_tokens: int) -> int:
        limit = getattr(self.model.base_lmm.config.get_text_config(), "max_position_embeddings", None)
        if limit is not None and prompt_len >= limit:
            raise ValueError(f"the prompt is {prompt_len} tokens, the LLM handles at most {limit}")
        return max_new_tokens if limit is None else min(max_new_tokens, limit - prompt_len)
