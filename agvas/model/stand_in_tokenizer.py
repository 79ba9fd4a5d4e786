"""A tokenizer with a real checkpoint's vocabulary size and special-token ids, for offline random-init runs.

Real-size shapes depend on the tokenizer only through its length (the embedding rows) and the ids of its
special tokens (the image token the processor expands, end of turn, padding). This stand-in has both
right, so sequence lengths, embedding sizes and the anchor rows appended after the vocabulary are those
of the real checkpoint. What differs from the real tokenizer:

- the merges are the tiny preset's ~1000-token BPE trained on instruction English, so a text encodes into
  more tokens than with Qwen2's or Llama's merges (the prompt part of a sequence is a little longer);
- the remaining regular ids are filler entries that no text ever encodes to;
- Llama's tokenizer is SentencePiece; here it is byte-level BPE with <unk> <s> </s> at ids 0..2;
- the chat templates are ChatML without Qwen2's default system prompt, and Vicuna v1 for LLaVA-1.5
  (`backbones.VICUNA_TEMPLATE`, what agvas uses for the real one too).
"""

from __future__ import annotations

import json

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from agvas.model.architectures import TOKENIZERS
from agvas.model.backbones import VICUNA_TEMPLATE
from agvas.model.tiny import CHAT_TEMPLATE, build_tokenizer

TEMPLATES = {"chatml": CHAT_TEMPLATE, "vicuna": VICUNA_TEMPLATE}


def _tiny_merges() -> tuple[list[str], list[tuple[str, str]]]:
    """The tiny BPE's regular tokens in id order and its merges (its special tokens dropped)."""
    tiny = build_tokenizer()
    state = json.loads(tiny.backend_tokenizer.to_str())
    specials = {t["content"] for t in state["added_tokens"]}
    vocab = sorted((i, t) for t, i in state["model"]["vocab"].items() if t not in specials)
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in state["model"]["merges"]]
    return [t for _, t in vocab], merges


def stand_in_tokenizer(family: str) -> PreTrainedTokenizerFast:
    """`family` is a text model type of `architectures.TOKENIZERS` ("qwen2", "llama")."""
    facts = TOKENIZERS[family]
    regular, leading, trailing = facts["regular"], facts["leading"], facts["trailing"]
    tokens, merges = _tiny_merges()
    vocab = {t: i for i, t in enumerate(leading)}
    for t in tokens:
        vocab[t] = len(vocab)
    filler = 0
    while len(vocab) < regular:
        vocab[f"<|agvas_filler_{filler}|>"] = len(vocab)
        filler += 1
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in leading + trailing])
    named = {"eos_token": facts["eos"], "pad_token": facts["pad"]}
    if facts["bos"] is not None:
        named["bos_token"] = facts["bos"]
    if "<unk>" in leading:
        named["unk_token"] = "<unk>"
    extra = [t for t in trailing if t not in named.values()]
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, additional_special_tokens=extra, **named)
    fast.chat_template = TEMPLATES[facts["template"]]
    expected = regular + len(trailing)
    if len(fast) != expected:
        raise AssertionError(f"stand-in tokenizer has {len(fast)} tokens, expected {expected}")
    return fast
