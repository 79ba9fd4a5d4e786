"""`agvas chat IMAGE`: a terminal dialogue about one image; every turn that yields a mask saves it.

Questions are read line by line from stdin until EOF or "exit"/"quit", so the command works both
interactively and with piped input (scripts, tests).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from agvas.cli.common import CHECKPOINT_HELP
from agvas.io import DEFAULT_MAX_PIXELS

EXIT_WORDS = frozenset({"exit", "quit", ":q"})


def chat(
    image: str = typer.Argument(..., help="the image to talk about"),
    checkpoint: str | None = typer.Option(None, help=CHECKPOINT_HELP),
    out: Path = typer.Option(Path("chat_out"), help="folder for turnN_mask.png"),
    device: str | None = typer.Option(None, help="cpu, cuda, ... [default: cuda if available]"),
    max_new_tokens: int = typer.Option(256, min=1, help="answer length limit"),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, min=1,
                                   help="refuse an image with more pixels than this (read from the header)"),
) -> None:
    """Ask questions about IMAGE; answers are printed, masks saved as OUT/turnN_mask.png."""
    from agvas.cli.model import _quiet_transformers
    from agvas.cli.segment import load_segmenter
    from agvas.infer.images import ImageLoadError
    from agvas.io import DataError, open_image, quiet_bomb_warnings, save_mask_png

    err = Console(stderr=True)
    quiet_bomb_warnings()
    try:  # the header alone, before a model is loaded or a pixel decoded
        open_image(image, max_pixels).close()
    except DataError as e:
        err.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(1) from None
    _quiet_transformers()
    segmenter = load_segmenter(checkpoint, device, err)
    try:
        session = segmenter.chat(image, max_new_tokens=max_new_tokens)
    except ImageLoadError as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    interactive = sys.stdin.isatty()
    if interactive:
        err.print(f"chatting about {image}; type 'exit' or Ctrl-D to stop")
    while True:
        if interactive:
            typer.echo("you> ", nl=False)
        line = sys.stdin.readline()
        if not line:
            break
        question = line.strip()
        if not question:
            continue
        if question.lower() in EXIT_WORDS:
            break
        try:
            result = session.ask(question)
        except ValueError as e:
            err.print(f"[yellow]{e}[/yellow]")
            continue
        typer.echo(f"assistant> {result.text}")
        if result.anchors_found:
            path = out / f"turn{session.turns}_mask.png"
            save_mask_png(path, result.mask)
            typer.echo(f"  mask: {path} (score {result.score:.3f}, anomalous: {result.anomalous}, "
                       f"area {100 * result.area_fraction:.2f}%)")
