"""Greedy decoding with the KV cache that also keeps every position's last-layer hidden state.

`transformers`' `generate()` does not hand back the hidden states of the tokens it generates at their own
positions (only those of the step that produced them), and AG-VAS reads each anchor's hidden state at
the anchor's own position. So the loop is written here: prefill the prompt once, then feed one token at
a time through the language model with its cache; feeding a token is what computes its hidden state.
A sequence that stops on max_new_tokens right after an anchor gets that last token fed once more.

Batches may be left-padded (prompts of different lengths): positions come from the attention mask, so
every sequence sees the same positions it would see alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from agvas.infer.timing import NullTimer
from agvas.model.agvas import AGVASModel


@dataclass
class Generated:
    tokens: list[list[int]]
    """Per sequence, the generated ids up to (not including) the stop token."""
    hidden: Tensor
    """(B, P + S, H): last-layer hidden states of the prompt and of every generated token that was fed."""
    answer_ids: Tensor
    """(B, P + S): ids aligned with `hidden`, with the prompt and everything after a stop replaced by padding,
    so that anchors are looked up in this turn's answer only (never in the prompt or the history)."""
    stopped: list[bool]
    """Whether each sequence ended on a stop token (False: it ran into max_new_tokens)."""


def stop_token_ids(model: AGVASModel) -> set[int]:
    """EOS of the tokenizer and of the LMM's generation config, plus the chat template's end-of-turn."""
    tok = model.tokenizer
    ids = {tok.eos_token_id}
    for token in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>"):
        if token in tok.get_vocab():
            ids.add(tok.convert_tokens_to_ids(token))
    gen_eos = getattr(getattr(model.base_lmm, "generation_config", None), "eos_token_id", None)
    ids.update(gen_eos if isinstance(gen_eos, list | tuple) else [gen_eos])
    return {i for i in ids if i is not None}


def _step(model: AGVASModel, embeds: Tensor, mask: Tensor | None, positions: Tensor, cache) -> tuple[Tensor, object]:
    return model.llm_hidden(embeds, mask, position_ids=positions, use_cache=True, cache=cache)


def greedy_generate(model: AGVASModel, inputs_embeds: Tensor, attention_mask: Tensor | None, max_new_tokens: int,
                    timer: NullTimer | None = None) -> Generated:
    """Greedy decoding from prompt embeddings (image slots already filled). Call under torch.inference_mode."""
    timer = timer or NullTimer()
    stops = torch.tensor(sorted(stop_token_ids(model)), device=inputs_embeds.device)
    pad_id = model.processor.pad_id
    b, prompt_len = inputs_embeds.shape[:2]
    device = inputs_embeds.device
    mask = attention_mask if attention_mask is not None else torch.ones(b, prompt_len, dtype=torch.long,
                                                                        device=device)
    padded = not bool(mask.all())
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    with timer("llm"):
        hidden, cache = _step(model, inputs_embeds, mask if padded else None, positions, None)
        states = [hidden]
        next_pos = positions[:, -1:] + 1
        logits = model.token_logits(hidden[:, -1])
        generated: list[Tensor] = []
        done = torch.zeros(b, dtype=torch.bool, device=device)
        live = torch.ones(b, dtype=torch.bool, device=device)  # False from the stop token on
        lengths = torch.zeros(b, dtype=torch.long, device=device)
        fed = 0
        for step in range(max_new_tokens):
            token = logits.argmax(-1)
            live &= ~torch.isin(token, stops)
            generated.append(torch.where(live, token, torch.full_like(token, pad_id)))
            lengths += live.long()
            done |= ~live
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones(b, 1, dtype=mask.dtype, device=device)], dim=1)
            hidden, cache = _step(model, model.embed_tokens(token).unsqueeze(1), mask if padded else None, next_pos,
                                  cache)
            states.append(hidden)
            fed += 1
            next_pos = next_pos + 1
            logits = model.token_logits(hidden[:, -1])
        if generated and fed < len(generated) and bool(_is_anchor(model, generated[-1]).any()):
            # The last token was never fed: feed it so an anchor that ends the answer has a hidden state.
            mask = torch.cat([mask, torch.ones(b, 1, dtype=mask.dtype, device=device)], dim=1)
            hidden, cache = _step(model, model.embed_tokens(generated[-1]).unsqueeze(1), mask if padded else None,
                                  next_pos, cache)
            states.append(hidden)
            fed += 1
    new = torch.stack(generated, dim=1) if generated else torch.empty(b, 0, dtype=torch.long, device=device)
    prompt_pad = torch.full((b, prompt_len), pad_id, dtype=torch.long, device=device)
    answer_ids = torch.cat([prompt_pad, new[:, :fed]], dim=1)
    tokens = [row[:n] for row, n in zip(new.tolist(), lengths.tolist(), strict=True)]
    return Generated(tokens=tokens, hidden=torch.cat(states, dim=1), answer_ids=answer_ids,
                     stopped=[bool(x) for x in done.tolist()])


def _is_anchor(model: AGVASModel, token: Tensor) -> Tensor:
    return torch.isin(token, torch.tensor(model.anchor_ids, device=token.device))

