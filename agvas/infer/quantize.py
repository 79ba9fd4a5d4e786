"""Cheaper numerics for inference: 8/4-bit LLM loading on CUDA (bitsandbytes), and dynamic int8 on CPU.

CUDA: 8-bit / 4-bit loading of the LLM only, through bitsandbytes as configured by transformers'
BitsAndBytesConfig. Only the language model's linear layers are quantised: they hold almost all of the
weights, while the encoders, SPAM and the AGMD are small and are what the masks are most sensitive to, so
they stay bf16.
The model is built in bf16 as usual, any LoRA is merged into the base weights (inference needs no
separate adapter), and each `nn.Linear` of the language model is swapped for its bitsandbytes
counterpart; bitsandbytes quantises the weights when the module is moved to the GPU.

CPU: `quantize_cpu_int8`, PyTorch's own dynamic int8 Linear (torch.ao, x86/fbgemm kernels) for the LLM and
the semantic encoder, opt-in (`cpu_int8=True`, `--cpu-int8`) because the masks move slightly.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Sequence

import torch
from torch import nn
from transformers import BitsAndBytesConfig

from agvas.model.agvas import AGVASModel


class QuantizationUnavailableError(RuntimeError):
    """8/4-bit loading was asked for on a machine that cannot do it."""


def quantization_config(load_in_8bit: bool, load_in_4bit: bool, device: torch.device) -> BitsAndBytesConfig | None:
    """The BitsAndBytesConfig for the request, or None; raises a clear error where it cannot work here."""
    if not (load_in_8bit or load_in_4bit):
        return None
    if load_in_8bit and load_in_4bit:
        raise ValueError("choose one of load_in_8bit and load_in_4bit")
    kind = "load_in_8bit" if load_in_8bit else "load_in_4bit"
    missing = []
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("the bitsandbytes package (pip install bitsandbytes)")
    if not torch.cuda.is_available():
        missing.append("a CUDA GPU (bitsandbytes kernels run on CUDA)")
    elif device.type != "cuda":
        missing.append(f"device cuda (got {device})")
    if missing:
        raise QuantizationUnavailableError(f"{kind} needs {' and '.join(missing)}; load without it "
                                           "(bf16 on GPU, fp32 on CPU)")
    return BitsAndBytesConfig(load_in_8bit=load_in_8bit, load_in_4bit=load_in_4bit,
                              bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_type="nf4")


def _bnb_linear(linear: nn.Linear, config: BitsAndBytesConfig) -> nn.Module:
    import bitsandbytes as bnb

    has_bias = linear.bias is not None
    weight = linear.weight.data
    if config.load_in_8bit:
        new = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, has_bias,
                                  has_fp16_weights=False, threshold=config.llm_int8_threshold)
        new.weight = bnb.nn.Int8Params(weight.to(torch.float16), requires_grad=False, has_fp16_weights=False)
    else:
        new = bnb.nn.Linear4bit(linear.in_features, linear.out_features, has_bias,
                                compute_dtype=config.bnb_4bit_compute_dtype, quant_type=config.bnb_4bit_quant_type,
                                compress_statistics=config.bnb_4bit_use_double_quant)
        new.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type=config.bnb_4bit_quant_type,
                                       compress_statistics=config.bnb_4bit_use_double_quant)
    if has_bias:
        new.bias = nn.Parameter(linear.bias.data.to(torch.float16 if config.load_in_8bit else linear.bias.dtype),
                                requires_grad=False)
    return new


def quantize_language_model(model: AGVASModel, config: BitsAndBytesConfig, device: torch.device) -> None:
    """Merge LoRA, swap the language model's linear layers for bitsandbytes ones, move them to `device`."""
    if hasattr(model.lmm, "merge_and_unload"):
        model.lmm = model.lmm.merge_and_unload()
    language_model = model.language_model
    for name, module in list(language_model.named_modules()):
        if type(module) is nn.Linear:
            language_model.set_submodule(name, _bnb_linear(module, config))
    language_model.to(device)  # bitsandbytes quantises on the transfer


# ---- dynamic int8 on CPU --------------------------------------------------------------------------------
CPU_INT8_PARTS: tuple[str, ...] = ("language_model", "semantic_encoder")
"""The backbones whose nn.Linear layers `quantize_cpu_int8` converts by default. SAM's image encoder
("pixel_encoder") is left out on purpose: its features reach the mask decoder directly, and in int8 they
moved the shipped checkpoint's masks to IoU 0.95 against fp32 (any one of its Linear kinds alone: <= 0.977).
SPAM, the Token Refiner and the AGMD stay fp32 (small, and nearest to the masks), and so do convolutions,
embeddings, norms, attention products and the (tied) LM head."""

CPU_INT8_KEEP_FP32: tuple[str, ...] = ("down_proj",)
"""Linear layers (by attribute name) kept fp32 inside those parts. The LLM's MLP output projection reads
the gated activations, the most heavy-tailed inputs of the network, which one per-tensor int8 scale
resolves worst: on the shipped checkpoint it alone moved P by up to 0.02, every other LLM Linear together by
0.003."""


def check_cpu_int8(device: torch.device, dtype: torch.dtype) -> None:
    """Fail before loading anything where dynamic int8 cannot run: its kernels (fbgemm / x86) are CPU-only
    and take fp32 activations."""
    if device.type != "cpu":
        raise ValueError(f"cpu_int8 runs on the CPU only (got device {device}); on CUDA use bf16 or load_in_8bit")
    if dtype != torch.float32:
        raise ValueError(f"cpu_int8 works on an fp32 model (got {str(dtype).removeprefix('torch.')}); "
                         "drop --dtype or pass fp32")


def quantize_cpu_int8(model: AGVASModel, parts: Sequence[str] = CPU_INT8_PARTS,
                      keep_fp32: Sequence[str] = CPU_INT8_KEEP_FP32) -> AGVASModel:
    """Convert the Linear layers of `parts` (but those named in `keep_fp32`) to dynamic int8, in place.

    Why: on a CPU without fast bf16 (AVX2 only, as the machine of the README's speed table) fp32 GEMMs are
    the floor, and the int8 GEMMs of PyTorch's x86/fbgemm backend run them about 1.5x faster. Weights are
    quantised once, per output channel; activations per call, per tensor, so no calibration data is
    needed. It is an opt-in approximation: the README gives the measured mask IoU against fp32, and the
    tests hold it to >= 0.99 on the shipped checkpoint. Any LoRA is merged first (one int8 matrix per
    layer). Returns the model.
    """
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    if hasattr(model.lmm, "merge_and_unload"):
        model.lmm = model.lmm.merge_and_unload()
    with warnings.catch_warnings():
        # torch.ao's eager quantisation warns that it is deprecated in favour of torchao; it is still the
        # only CPU int8 Linear in PyTorch itself, and nothing else changes.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        for part in parts:
            module = getattr(model, part)
            spec: dict = {nn.Linear: per_channel_dynamic_qconfig}
            spec.update({name: None for name, _ in module.named_modules() if name.rsplit(".", 1)[-1] in keep_fp32})
            quantize_dynamic(module, spec, inplace=True)
    return model
