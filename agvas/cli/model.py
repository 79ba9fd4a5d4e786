"""`agvas model ...`: build a model from a preset, show what it holds, save it as a checkpoint."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console

from agvas.model.config import PRESETS, VARIANTS

app = typer.Typer(no_args_is_help=True)
CPU_SIZED = ("tiny", "llava-ov-0.5b")
"""Presets whose random-init build fits this kind of machine's memory in fp32; the rest go to meta."""
console = Console()


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


@app.command()
def info(
    preset: str = typer.Option("tiny", help=f"one of {', '.join(PRESETS)}"),
    variant: str = typer.Option("agvas", help=f"one of {', '.join(VARIANTS)}"),
    lmm: str | None = typer.Option(None, help="LLaVA-family checkpoint folder (real presets)"),
    sam: str | None = typer.Option(None, help="SAM checkpoint folder (real presets)"),
    save: Path | None = typer.Option(None, help="also save the freshly built model as a checkpoint here"),
    random_init: bool = typer.Option(False, "--random-init", help="real preset from the shipped architecture, "
                                     "random weights, no download"),
    device: str | None = typer.Option(None, help="with --random-init: cpu or meta (parameter table only) "
                                      "[default: cpu for tiny and llava-ov-0.5b, meta for the larger ones]"),
) -> None:
    """Build a model and print its parameter table (and one forward pass's time for a 256x256 image)."""
    _quiet_transformers()
    import torch

    from agvas.anchors import DIRECT_INSTRUCTION, IMAGE_PLACEHOLDER, direct_answer
    from agvas.model.build import build_model
    from agvas.model.summary import parameter_table

    if preset not in PRESETS or variant not in VARIANTS:
        raise typer.BadParameter(f"preset must be one of {list(PRESETS)}, variant one of {list(VARIANTS)}")
    device = device or ("cpu" if not random_init or preset in CPU_SIZED else "meta")
    if save is not None and device == "meta":
        raise typer.BadParameter("a model on the meta device has no weights to save; use --device cpu")
    # Random backbones of a saved checkpoint must be on disk for it to load: next to it, not inside it.
    backbones = save.parent / f"{save.name}-backbones" if save is not None and random_init else None
    with console.status(f"building {preset}/{variant} ..."):
        model = build_model(preset, variant, lmm=lmm, sam=sam, random_init=random_init, device=device,
                            backbone_dir=backbones).eval()
    suffix = " (random init, meta device)" if device == "meta" else " (random init)" if random_init else ""
    console.print(parameter_table(model, f"AG-VAS {preset}/{variant}{suffix}"))
    if device == "meta":
        return
    conversation = [{"role": "user", "content": f"{IMAGE_PLACEHOLDER}\n{DIRECT_INSTRUCTION}"},
                    {"role": "assistant", "content": direct_answer(model.config.anchors)}]
    image = torch.zeros(3, 256, 256, dtype=torch.uint8)
    batch = model.processor({"images": [image], "conversations": [conversation]})
    with torch.inference_mode():
        start = time.perf_counter()
        out = model(**batch)
        elapsed = time.perf_counter() - start
    console.print(f"sequence length {batch['input_ids'].shape[1]} tokens; anchors found: "
                  f"{bool(out.anchor_found.all())}; forward pass {elapsed * 1000:.0f} ms")
    if save is not None:
        model.save_pretrained(save)
        console.print(f"saved to {save}")


@app.command()
def push(
    folder: Path = typer.Argument(..., help="an AG-VAS checkpoint folder (save_pretrained / agvas train output)"),
    repo_id: str = typer.Argument(..., help="owner/name on the Hugging Face Hub"),
    private: bool = typer.Option(False, "--private", help="create the repository as private"),
    token: str | None = typer.Option(None, envvar="HF_TOKEN", help="a Hub write token [default: your login]"),
) -> None:
    """Upload a checkpoint to the Hub with a model card made from its training.json (kept if README.md exists).

    Load it anywhere with `--checkpoint owner/name` or Segmenter.from_pretrained("owner/name")."""
    from agvas.model.hub import push_to_hub

    try:
        url = push_to_hub(folder, repo_id, private=private, token=token)
    except FileNotFoundError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    console.print(f"uploaded {folder} to {url}")
