"""8-bit / 4-bit loading of the LLM only, through bitsandbytes as configured by transformers' BitsAndBytesConfig.

Only the language model's linear layers are quantised: they hold almost all of the weights, while the
encoders, SPAM and the AGMD are small and are what the masks are most sensitive to, so they stay bf16.
The model is built in bf16 as usual, any LoRA is merged into the base weights (inference needs no
separate adapter), and each `nn.Linear` of the language model is swapped for its bitsandbytes
counterpart; bitsandbytes quantises the weights when the module is moved to the GPU.
"""

from __future__ import annotations

import importlib.util

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
