"""`agvas data annotate`: write Anomaly-Instruct records with any OpenAI-compatible LMM server."""

from __future__ import annotations

import os
from pathlib import Path

import typer


def annotate(
    data: Path = typer.Option(..., "--data", help="Dataset root holding meta.json."),
    out: Path = typer.Option(..., "--out", help="JSONL file to append records to (resumed if it exists)."),
    url: str | None = typer.Option(None, "--url", envvar="AGVAS_ANNOTATE_URL",
                                   help="OpenAI-compatible server base URL (POST {url}/v1/chat/completions)."),
    model: str | None = typer.Option(None, "--model", envvar="AGVAS_ANNOTATE_MODEL", help="Model name."),
    api_key_env: str = typer.Option("AGVAS_ANNOTATE_API_KEY", "--api-key-env",
                                    help="Environment variable holding the API key (unset: no key sent)."),
    concurrency: int = typer.Option(4, "--concurrency", min=1, help="Requests in flight at once."),
    max_retries: int = typer.Option(4, "--max-retries", min=0, help="Retries per sample after the first try."),
    timeout: float = typer.Option(120.0, "--timeout", min=0.01, help="Seconds allowed per request."),
    limit: int | None = typer.Option(None, "--limit", min=0,
                                     help="Only the first N anomalous samples (in meta.json order)."),
    split: str = typer.Option("test", "--split", help="Which split of meta.json to annotate."),
    max_side: int = typer.Option(768, "--max-side", min=64, help="Shrink images to this longest side."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Annotate each anomalous sample (boxes image, mask overlay, normal reference) into five fields.

    Interrupted runs resume: samples already in OUT are skipped. Samples that still fail after all
    retries are listed at the end and the exit code is 1.
    """
    from agvas.data.annotate import ENV_MODEL, ENV_URL, AnnotateConfig, run_annotation
    from agvas.io import DataError

    url = url or os.environ.get(ENV_URL)
    model = model or os.environ.get(ENV_MODEL)
    if not url or not model:
        missing = " and ".join(n for n, v in (("--url", url), ("--model", model)) if not v)
        typer.echo(f"error: {missing} not given (options or {ENV_URL} / {ENV_MODEL})", err=True)
        raise typer.Exit(2)
    cfg = AnnotateConfig(url=url, model=model, api_key=os.environ.get(api_key_env) or None,
                         concurrency=concurrency, max_retries=max_retries, timeout=timeout,
                         max_side=max_side, split=split, limit=limit)
    try:
        report = run_annotation(data, out, cfg, progress=progress)
    except DataError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{report.written} written, {report.skipped} already done, {len(report.failures)} failed "
               f"(of {report.total} anomalous samples) -> {out}")
    if report.failures:
        for img_path, why in report.failures[:20]:
            typer.echo(f"  failed: {img_path}: {why}", err=True)
        if len(report.failures) > 20:
            typer.echo(f"  ... and {len(report.failures) - 20} more", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this module's commands to `agvas data`."""
    app.command("annotate")(annotate)
