"""Where a model comes from (a checkpoint folder, a Hub id, the shipped default, or a preset) and where it
runs.

A Hub id (`owner/name`) that is not a local folder is fetched once with `huggingface_hub.snapshot_download`
and read from its cache afterwards; with HF_HUB_OFFLINE=1 only the cache is read, and a repo that is not
there is a CheckpointNotFoundError that says so, never a hang on the network.

The default device and precision follow the hardware: CUDA in bf16 where there is a GPU, CPU in fp32
otherwise (bf16 matmuls on most CPUs are slower than fp32 and less exact).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch

from agvas.model.agvas import AGVASModel
from agvas.model.config import CONFIG_FILE, PRESETS

# From this file, not `agvas.__file__`: that is None when a folder named agvas shadows the package.
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "agvas-tiny"
"""The small trained model shipped in the repository (written by `agvas train --config configs/tiny.yaml`)."""

_DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
}


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
"""owner/name, as the Hub spells a repository."""


class CheckpointNotFoundError(FileNotFoundError):
    """No checkpoint where one was expected, with how to make one."""


class UntrainedModelWarning(UserWarning):
    """A preset name builds random weights: its masks and answers mean nothing."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available (use --device cpu)")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(sorted(_DTYPES))}") from None


def load_model(path_or_preset: str | Path | None, dtype: torch.dtype,
               cache_dir: str | Path | None = None, random_init: bool = False) -> tuple[AGVASModel, str]:
    """The model and a description of where it came from.

    A string that is a preset name and not an existing folder builds that preset with random AG-VAS
    weights (and warns); an `owner/name` that is not a folder is a Hub id (`hub_checkpoint`, read from
    `cache_dir` or the Hub's default cache); anything else must be a checkpoint folder. `random_init`
    makes a real preset's backbones random too, from the shipped architectures (no download), for
    measuring at real size.
    """
    if random_init and (path_or_preset is None or str(path_or_preset) not in PRESETS):
        raise ValueError(f"random_init needs a preset name ({', '.join(PRESETS)}), got {path_or_preset!r}")
    if path_or_preset is None:
        path = DEFAULT_CHECKPOINT
        if not (path / CONFIG_FILE).is_file():
            raise CheckpointNotFoundError(
                f"no default checkpoint at {path}. Create it by training the tiny model "
                "(`agvas train --config configs/tiny.yaml`), or pass a checkpoint folder "
                "(--checkpoint DIR / Segmenter.from_pretrained(DIR)), or a preset name such as 'tiny' "
                "for an untrained model."
            )
        return AGVASModel.from_pretrained(path, dtype=dtype), str(path)
    text = str(path_or_preset)
    if text in PRESETS and not Path(text).exists():
        from agvas.model.build import build_model

        warnings.warn(f"preset {text!r} builds an UNTRAINED model with random AG-VAS weights: its masks and "
                      "answers are meaningless (load a trained checkpoint folder for real use)",
                      UntrainedModelWarning, stacklevel=3)
        where = f"preset:{text} (untrained{', random-init backbones' if random_init else ''})"
        extra = {"random_init": True} if random_init else {}
        return build_model(text, dtype=dtype, **extra), where
    path = Path(text)
    if not path.exists() and HUB_ID.match(text):
        folder = hub_checkpoint(text, cache_dir)
        return AGVASModel.from_pretrained(folder, dtype=dtype), f"hub:{text} ({folder})"
    if not path.exists():
        raise CheckpointNotFoundError(f"checkpoint folder {path} does not exist (and {text!r} is not a preset: "
                                      f"{', '.join(PRESETS)})")
    return AGVASModel.from_pretrained(path, dtype=dtype), str(path)


def hub_checkpoint(repo_id: str, cache_dir: str | Path | None = None, revision: str | None = None) -> Path:
    """The local snapshot folder of an AG-VAS checkpoint on the Hub (downloaded if online and not cached)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, cache_dir=cache_dir, revision=revision))
    except LocalEntryNotFoundError:
        raise CheckpointNotFoundError(
            f"{repo_id!r} is neither a local folder nor in the Hugging Face cache, and the Hub cannot be reached "
            "(HF_HUB_OFFLINE=1 or no network). Download it once online (`hf download "
            f"{repo_id}`), or pass a checkpoint folder") from None
    except RepositoryNotFoundError:
        raise CheckpointNotFoundError(f"{repo_id!r} is neither a local folder nor a Hub repository you can "
                                      "read (check the name, or log in for a private one)") from None
    except HfHubHTTPError as err:
        raise CheckpointNotFoundError(f"could not fetch {repo_id!r} from the Hub ({err})") from None
    if not (folder / CONFIG_FILE).is_file():
        raise CheckpointNotFoundError(f"Hub repository {repo_id!r} holds no {CONFIG_FILE}: not an AG-VAS "
                                      "checkpoint (save one with save_pretrained, upload with `agvas model push`)")
    return folder
