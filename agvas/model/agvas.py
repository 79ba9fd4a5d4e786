"""The AG-VAS network: encoders -> SPAM -> LLM with anchor tokens -> Token Refiner -> AGMD -> masks.

`AGVASModel.build` makes a model from a config (loading the backbones the config names);
`save_pretrained`/`from_pretrained` write and read a checkpoint folder:

    agvas_config.json     the AGVASConfig
    model.safetensors     what AG-VAS adds and trains (SPAM, Token Refiner, AGMD)
    adapter/              the LLM's LoRA and anchor-token rows (peft), for frozen real backbones
    lmm/, sam/            the full backbones, only when they were trained (the tiny preset)
    tokenizer files       the LMM tokenizer with the anchor tokens
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agvas.model import backbones
from agvas.model.checkpoint import load_checkpoint, save_checkpoint
from agvas.model.config import AGVASConfig
from agvas.model.decoder import AnchorGuidedMaskDecoder, DecoderOutput
from agvas.model.fine import FineBranch
from agvas.model.losses import LossParts, segmentation_losses, text_loss, total_loss
from agvas.model.processor import AGVASProcessor, add_anchor_tokens
from agvas.model.reference import SelfReference
from agvas.model.refiner import TokenRefiner
from agvas.model.spam import SemanticPixelAlignment


@dataclass
class AGVASOutput:
    """Everything a forward pass produces; maps are at the requested output size (or low-res)."""

    logits: Tensor
    anchor_found: Tensor
    """(B,) True where every anchor of the variant occurs in the sequence (only then are the maps meaningful)."""
    decoder: DecoderOutput
    seg_logits: Tensor | None = None
    nor_logits: Tensor | None = None
    ano_logits: Tensor | None = None
    loss: Tensor | None = None
    loss_parts: dict[str, Tensor] | None = None


def fuse(seg_logits: Tensor | None, nor_logits: Tensor | None, ano_logits: Tensor | None,
         alpha: float) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """P = α·P_seg + (1−α)·P_ano (Eq. 8); a variant with only one kind of anchor uses that head alone.

    Returns (P, P_seg, P_ano).
    """
    p_seg = seg_logits.sigmoid() if seg_logits is not None else None
    p_ano = (ano_logits - nor_logits).sigmoid() if ano_logits is not None and nor_logits is not None else None
    if p_seg is not None and p_ano is not None:
        return alpha * p_seg + (1 - alpha) * p_ano, p_seg, p_ano
    return (p_seg if p_seg is not None else p_ano), p_seg, p_ano


@functools.cache
def _cache_kwarg(language_model_type: type) -> str:
    """transformers 5.x calls the KV cache `cache`; older releases `past_key_values`."""
    params = inspect.signature(language_model_type.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _resolve(path: str, base: Path | None) -> str:
    if base is not None and (base / path).exists():
        return str(base / path)
    return path


def _weights_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


class AGVASModel(nn.Module):
    def __init__(self, config: AGVASConfig, lmm: nn.Module, sam: nn.Module, tokenizer,
                 semantic_spec: backbones.ImageSpec, pixel_spec: backbones.ImageSpec) -> None:
        super().__init__()
        self.config = config
        self.lmm = lmm
        self.semantic_encoder = backbones.SemanticEncoder(lmm)
        self.pixel_encoder = backbones.PixelEncoder(sam)
        llm_dim = lmm.config.text_config.hidden_size
        dim = self.pixel_encoder.out_channels
        self.spam = SemanticPixelAlignment(llm_dim, dim, config.spam_heads) if config.use_spam else None
        self.refiner = TokenRefiner(llm_dim, dim)
        self.decoder = AnchorGuidedMaskDecoder(config.anchors, dim, config.decoder_depth, config.decoder_heads,
                                               config.decoder_mlp_dim)
        self.fine = self._new_fine_branch() if config.fine_branch else None
        self.reference = self._new_self_reference() if config.self_reference else None
        self._sam = [sam]  # kept for saving trained tiny backbones; not a submodule (its decoder is unused)
        self.backbone_paths: dict[str, str] = {}
        self.tokenizer = tokenizer
        n_sem = self.semantic_encoder.num_tokens
        self.processor = AGVASProcessor(tokenizer, lmm.config.image_token_id, n_sem,
                                        n_sem if config.use_spam else 0, semantic_spec, pixel_spec)
        self.anchor_ids = [self.processor.anchor_ids[a] for a in self.decoder.anchors]

    # ---- construction -----------------------------------------------------------------------------
    @classmethod
    def build(cls, config: AGVASConfig, base_dir: str | Path | None = None,
              dtype: torch.dtype = torch.float32, adapter_dir: str | Path | None = None) -> AGVASModel:
        """Load the backbones the config names, add the anchors, apply the training policy.

        `base_dir` resolves relative backbone paths (a checkpoint's own lmm/ and sam/ folders).
        """
        base = Path(base_dir) if base_dir is not None else None
        lmm_path, sam_path = _resolve(config.lmm, base), _resolve(config.sam, base)
        lmm = backbones.load_lmm(lmm_path, dtype)
        sam = backbones.load_sam(sam_path, dtype)
        tok_path = str(base) if base is not None and (base / "tokenizer_config.json").exists() else lmm_path
        tokenizer = backbones.load_tokenizer(tok_path, lmm.config.model_type)
        model = cls.assemble(config, lmm, sam, tokenizer, backbones.semantic_image_spec(lmm, lmm_path),
                             backbones.pixel_image_spec(sam.config.vision_config.image_size, sam_path),
                             adapter_dir)
        model.backbone_paths = {"lmm": lmm_path, "sam": sam_path}
        return model.to(dtype)

    @classmethod
    def assemble(cls, config: AGVASConfig, lmm: nn.Module, sam: nn.Module, tokenizer,
                 semantic_spec: backbones.ImageSpec, pixel_spec: backbones.ImageSpec,
                 adapter_dir: str | Path | None = None) -> AGVASModel:
        """Backbones already in memory -> AG-VAS: anchors added, AGMD initialised, training policy applied.

        Separate from `build` so that backbones made without files (random-init, on the meta device) go
        through the same steps as loaded ones; under `torch.device("meta")` nothing is allocated.
        """
        add_anchor_tokens(tokenizer)
        if lmm.get_input_embeddings().num_embeddings < len(tokenizer):
            lmm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        model = cls(config, lmm, sam, tokenizer, semantic_spec, pixel_spec)
        if config.init_decoder_from_sam and adapter_dir is None:
            model.decoder.load_sam_mask_decoder(sam.mask_decoder, sam.shared_image_embedding.positional_embedding,
                                                sam.prompt_encoder.no_mask_embed.weight)
        else:
            with torch.no_grad():
                model.decoder.pe.positional_embedding.copy_(sam.shared_image_embedding.positional_embedding)
        model.apply_training_policy(adapter_dir)
        return model

    def apply_training_policy(self, adapter_dir: str | Path | None = None) -> None:
        """Random backbones train whole; real ones are frozen and the LLM gets LoRA + anchor-token rows."""
        for p in self.parameters():
            p.requires_grad_(True)
        if self.config.train_backbones:
            for p in self.unused_backbone_parameters():
                p.requires_grad_(False)
            return
        for module in (self.lmm, self.pixel_encoder):
            module.requires_grad_(False)
        if self.config.lora_rank <= 0:
            self.lmm.get_input_embeddings().weight.requires_grad_(True)
            self.lmm.get_output_embeddings().weight.requires_grad_(True)
            return
        from peft import LoraConfig, PeftModel, get_peft_model

        if adapter_dir is not None:
            self.lmm = PeftModel.from_pretrained(self.lmm, str(adapter_dir), is_trainable=True)
            return
        targets = "|".join(self.config.lora_targets)
        token_modules = {"embed_tokens": list(self.anchor_ids)}
        if not self.lmm.config.get_text_config().tie_word_embeddings:
            token_modules["lm_head"] = list(self.anchor_ids)
        peft_config = LoraConfig(
            r=self.config.lora_rank, lora_alpha=self.config.lora_alpha, lora_dropout=self.config.lora_dropout,
            # LoRA on the language model's attention only: the vision tower has q_proj/v_proj too.
            target_modules=rf".*language_model.*\.({targets})",
            trainable_token_indices=token_modules,
        )
        self.lmm = get_peft_model(self.lmm, peft_config)

    def unused_backbone_parameters(self) -> list[nn.Parameter]:
        """Backbone weights no AG-VAS forward touches: the vision tower's layers past the feature layer and
        its final norm/head, and LLaVA-OneVision's any-resolution newline (one base-resolution image here)."""
        tower = self.semantic_encoder.vision_tower
        inner = getattr(tower, "vision_model", tower)
        unused = [p for name in ("post_layernorm", "head") if hasattr(inner, name)
                  for p in getattr(inner, name).parameters()]
        layer = self.semantic_encoder.feature_layer
        encoder_layers = inner.encoder.layers
        if isinstance(layer, int) and layer < -1:
            unused += [p for blk in encoder_layers[len(encoder_layers) + layer + 1:] for p in blk.parameters()]
        newline = getattr(self.base_lmm.model, "image_newline", None)
        if newline is not None:
            unused.append(newline)
        return unused

    @property
    def base_lmm(self) -> nn.Module:
        return self.lmm.get_base_model() if hasattr(self.lmm, "get_base_model") else self.lmm

    @property
    def language_model(self) -> nn.Module:
        """The LLM's embeddings and decoder layers (LoRA applied when present), without the LM head.

        The one place that knows where a LLaVA-family model keeps its LLM; inference (the fast path,
        greedy decoding, 8/4-bit loading) goes through this and the methods below, so supporting another
        LMM family changes this file, not theirs.
        """
        return self.base_lmm.model.language_model

    @property
    def lm_head(self) -> nn.Module:
        return self.base_lmm.lm_head

    # ---- forward ----------------------------------------------------------------------------------
    def encode_images(self, semantic_pixels: Tensor, sam_pixels: Tensor) -> tuple[Tensor, Tensor]:
        """f_s (B, N_s, D_llm) and the pixel embedding f_p (B, C, h, w).

        The processor makes fp32 pixels; each encoder gets them in its own weights' dtype, because DeepSpeed
        casts the whole model to bf16 and, unlike accelerate's mixed precision, does not autocast.
        """
        f_s = self.semantic_encoder(semantic_pixels.to(_weights_dtype(self.semantic_encoder)))
        return f_s, self.encode_pixels(sam_pixels)

    def encode_pixels(self, sam_pixels: Tensor) -> Tensor:
        """The pixel embedding f_p (B, C, h, w): SAM's image encoder, then the self-reference cues if the model
        has them; SPAM and AGMD both read this."""
        f_p = self.pixel_encoder(sam_pixels.to(_weights_dtype(self.pixel_encoder)))
        return f_p if self.reference is None else self.reference(f_p)

    def embed_inputs(self, input_ids: Tensor, f_s: Tensor, f_p: Tensor) -> Tensor:
        """Token embeddings with the image slots filled by Concat(f_s, f_align) (Eq. 3)."""
        embeds = self.lmm.get_input_embeddings()(input_ids)
        visual = f_s if self.spam is None else torch.cat([f_s, self.spam(f_s, f_p)], dim=1)
        slots = input_ids == self.base_lmm.config.image_token_id
        counts = slots.sum(-1)
        if not bool((counts == visual.shape[1]).all()):
            raise ValueError(f"each sequence needs {visual.shape[1]} image slots, found {counts.tolist()}; "
                             "build inputs with model.processor")
        return embeds.masked_scatter(slots.unsqueeze(-1), visual.to(embeds.dtype))

    def anchor_positions(self, input_ids: Tensor) -> tuple[Tensor, Tensor]:
        """Per sample and anchor, the last position holding that anchor; and whether all were found."""
        hits = torch.stack([input_ids == a for a in self.anchor_ids], dim=1)  # (B, A, T)
        found = hits.any(-1)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        last = torch.where(hits, positions, -1).amax(-1).clamp(min=0)
        return last, found.all(-1)

    def embed_tokens(self, input_ids: Tensor) -> Tensor:
        """The LLM's input embeddings of plain tokens (no image slots), e.g. one generated token."""
        return self.lmm.get_input_embeddings()(input_ids)

    def llm_hidden(self, inputs_embeds: Tensor, attention_mask: Tensor | None = None, *,
                   position_ids: Tensor | None = None, use_cache: bool | None = None,
                   cache: Any = None) -> tuple[Tensor, Any]:
        """Last-layer hidden states of the LLM over `inputs_embeds`, and its KV cache when `use_cache`.

        Only the arguments given are passed on, so each caller gets exactly the LLM call it asks for:
        training the model's default, the fast path no cache, greedy decoding a cache fed step by step
        (`cache=None` on the prefill) with positions that skip left padding.
        """
        language_model = self.language_model
        kwargs: dict[str, Any] = {}
        if position_ids is not None:
            kwargs["position_ids"] = position_ids
        if use_cache is not None:
            kwargs["use_cache"] = use_cache
        key = _cache_kwarg(type(language_model)) if use_cache else None
        if key is not None:
            kwargs[key] = cache
        out = language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)
        return out.last_hidden_state, (getattr(out, key) if key is not None else None)

    def token_logits(self, hidden: Tensor) -> Tensor:
        """The LM head over hidden states: next-token logits."""
        return self.lm_head(hidden)

    def run_llm(self, inputs_embeds: Tensor, attention_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Last-layer hidden states and logits of the LLM (LoRA applied when present)."""
        hidden, _ = self.llm_hidden(inputs_embeds, attention_mask)
        return hidden, self.token_logits(hidden)

    def decode_masks(self, hidden: Tensor, input_ids: Tensor, f_p: Tensor,
                     sam_pixels: Tensor | None = None) -> tuple[DecoderOutput, Tensor]:
        """Masks from the anchors' hidden states (refined, then decoded against f_p), and whether every
        sequence holds all anchors; `input_ids` says where the anchors are in `hidden`. A model with the
        fine branch also needs the pixels f_p was encoded from."""
        positions, found = self.anchor_positions(input_ids)
        anchor_hidden = hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        refined = self.refiner(anchor_hidden)
        fine = None
        if self.fine is not None:
            if sam_pixels is None:
                raise ValueError("this model has a fine branch (config.fine_branch): decode_masks needs sam_pixels")
            fine = self.fine(sam_pixels)
        return self.decoder(refined, f_p, fine), found

    def add_fine_branch(self) -> None:
        """Give a trained model the fine branch (a second training stage); it starts as a no-op."""
        self._add_part("fine", "fine_branch", self._new_fine_branch)

    def add_self_reference(self) -> None:
        """Give a trained model the self-reference cues (a second training stage); they start as a no-op."""
        self._add_part("reference", "self_reference", self._new_self_reference)

    def _add_part(self, attribute: str, flag: str, make: Callable[[], nn.Module]) -> None:
        if getattr(self, attribute) is not None:
            return
        weight = self.decoder.upscale_conv2.weight
        setattr(self, attribute, make().to(weight.device, weight.dtype))
        self.config = replace(self.config, **{flag: True})

    def _new_fine_branch(self) -> FineBranch:
        """Sized to the embedding AGMD's heads classify, the one its output is added to."""
        return FineBranch(self.decoder.upscale_conv2.out_channels)

    def _new_self_reference(self) -> SelfReference:
        """Sized to the pixel embedding it adds its cues to."""
        return SelfReference(self.pixel_encoder.out_channels)

    def forward(self, input_ids: Tensor, semantic_pixels: Tensor, sam_pixels: Tensor,
                attention_mask: Tensor | None = None, labels: Tensor | None = None, masks: Tensor | None = None,
                has_mask: Tensor | None = None, resized_sizes: Tensor | None = None,
                original_sizes: Tensor | None = None) -> AGVASOutput:
        """Maps come back at the masks' size (or low-res without masks). `original_sizes` is accepted so a
        processor batch can be passed as is; per-image original sizes are restored by the inference code."""
        f_s, f_p = self.encode_images(semantic_pixels, sam_pixels)
        embeds = self.embed_inputs(input_ids, f_s, f_p)
        hidden, logits = self.run_llm(embeds, attention_mask)
        dec, found = self.decode_masks(hidden, input_ids, f_p, sam_pixels)
        out = AGVASOutput(logits=logits, anchor_found=found, decoder=dec)
        size = tuple(masks.shape[-2:]) if masks is not None else None
        maps = [self.upsample(x, resized_sizes, size) for x in (dec.seg_logits, dec.nor_logits, dec.ano_logits)]
        out.seg_logits, out.nor_logits, out.ano_logits = maps
        if labels is not None or masks is not None:
            out.loss_parts, out.loss = self._loss(out, labels, masks, has_mask)
        return out

    def upsample(self, low: Tensor | None, resized_sizes: Tensor | None, size: tuple[int, int] | None) -> Tensor | None:
        """Low-res logits -> SAM's padded input frame -> crop the valid region -> `size` (SAM's post-processing).

        Without `size` the low-res logits are returned. Images of different sizes are upsampled one by one
        (agvas.infer.result.build_results does so).
        """
        if low is None or size is None:
            return low
        side = self.pixel_encoder.image_size
        full = F.interpolate(low.unsqueeze(1), (side, side), mode="bilinear", align_corners=False)
        if resized_sizes is not None:
            h, w = (int(v) for v in resized_sizes[0])
            if not bool((resized_sizes == resized_sizes[0]).all()):
                raise ValueError("a training batch must hold images of one size; upsample mixed sizes image by image")
            full = full[..., :h, :w]
        return F.interpolate(full, size, mode="bilinear", align_corners=False).squeeze(1)

    def _loss(self, out: AGVASOutput, labels: Tensor | None, masks: Tensor | None,
              has_mask: Tensor | None) -> tuple[dict[str, Tensor], Tensor]:
        ce = text_loss(out.logits, labels) if labels is not None else out.logits.sum() * 0.0
        seg: dict[str, Tensor] = {}
        if masks is not None:
            # A sample teaches the decoder only if it has a mask and its answer holds the anchors.
            keep = out.anchor_found if has_mask is None else out.anchor_found & has_mask.to(out.anchor_found.device)
            seg = segmentation_losses(out.seg_logits, out.nor_logits, out.ano_logits, masks,
                                      self.config.bce_weight, self.config.dice_weight, weights=keep,
                                      image_weight=self.config.image_weight, image_topk=self.config.image_topk,
                                      normal_weight=self.config.normal_weight, normal_topk=self.config.normal_topk,
                                      defect_weight=self.config.defect_weight)
        parts: LossParts = total_loss(ce, seg)
        return parts.parts, parts.total

    # ---- maps -------------------------------------------------------------------------------------
    def probability_maps(self, out: AGVASOutput) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """(P, P_seg, P_ano) from an output's logits, with the config's α."""
        return fuse(out.seg_logits, out.nor_logits, out.ano_logits, self.config.fusion_alpha)

    def binary_mask(self, probability: Tensor) -> Tensor:
        return probability > self.config.threshold

    # ---- parameters -------------------------------------------------------------------------------
    def added_modules(self) -> dict[str, nn.Module]:
        """What AG-VAS adds to the backbones; always trained, always saved in model.safetensors."""
        mods: dict[str, nn.Module] = {"refiner": self.refiner, "decoder": self.decoder}
        if self.spam is not None:
            mods["spam"] = self.spam
        if self.fine is not None:
            mods["fine"] = self.fine
        if self.reference is not None:
            mods["reference"] = self.reference
        return mods

    def parameter_table(self) -> list[tuple[str, int, int]]:
        """(part, parameters, trainable parameters) for each part of the model, each parameter counted once.

        A tied LM head is the input embedding matrix itself: its row counts only what the LLM's row did
        not, so the rows add up to the unique total (`numel` of each distinct tensor). Identity, not
        data_ptr, decides sameness: on the meta device every tensor's data_ptr is 0.
        """
        parts: dict[str, nn.Module] = {
            "semantic encoder (vision tower + projector)": self.semantic_encoder,
            "pixel encoder (SAM image encoder)": self.pixel_encoder,
            "LLM (embeddings, layers, LoRA)": self.language_model,
            "LM head": self.lm_head,
            **{name: m for name, m in self.added_modules().items()},
        }
        seen: set[int] = set()
        rows = []
        for name, module in parts.items():
            own = [p for p in module.parameters() if id(p) not in seen]
            seen.update(id(p) for p in own)
            if name == "LM head" and not own and any(True for _ in module.parameters()):
                name = "LM head (tied to the input embeddings)"
            rows.append((name, sum(p.numel() for p in own), sum(p.numel() for p in own if p.requires_grad)))
        rest = [p for p in self.parameters() if id(p) not in seen]  # e.g. LLaVA-OV's anyres image_newline
        if rest:
            rows.append(("other backbone parameters (unused here)", sum(p.numel() for p in rest),
                         sum(p.numel() for p in rest if p.requires_grad)))
        return rows

    # ---- save / load ------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> Path:
        """Write a checkpoint folder; it is assembled under a temporary name first, then renamed."""
        return save_checkpoint(self, folder)

    @classmethod
    def from_pretrained(cls, folder: str | Path, dtype: torch.dtype = torch.float32) -> AGVASModel:
        """A model from a folder `save_pretrained` wrote (backbones by the config's ids or the folder's own)."""
        return load_checkpoint(cls, folder, dtype)

