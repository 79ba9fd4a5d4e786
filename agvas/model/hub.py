"""Sharing a checkpoint folder on the Hugging Face Hub: a model card written from what the folder records,
and the upload.

The card is made from the checkpoint's own agvas_config.json and training.json, so the figures and the list
of training sets a reader sees are the ones the training run wrote, not a hand-copied summary. A README.md
already in the folder is the author's own card and is kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agvas.io import atomic_write_bytes, read_json
from agvas.model.config import CONFIG_FILE

CARD_FILE = "README.md"
TRAINING_FILE = "training.json"


def _json(path: Path) -> dict[str, Any]:
    """A file the checkpoint may lack (training.json of a hand-saved model): absent is empty."""
    return read_json(path) if path.is_file() else {}


def model_card(folder: str | Path, repo_id: str) -> str:
    """The Hub model card (YAML front matter + Markdown) of an AG-VAS checkpoint folder."""
    folder = Path(folder)
    config = _json(folder / CONFIG_FILE)
    training = _json(folder / TRAINING_FILE)
    trained_on = training.get("trained_on") or ["not recorded (trained before training.json listed its sets)"]
    lines = [
        "---", "library_name: agvas", "pipeline_tag: image-segmentation",
        "tags: [anomaly-detection, zero-shot, visual-anomaly-segmentation, ag-vas]",
        "license: other  # the training sets' licences apply: see 'Trained on'", "---", "",
        f"# {repo_id}", "",
        f"An AG-VAS checkpoint (`{config.get('name', 'unknown')}`): an LMM with the anchor tokens "
        f"{' '.join(config.get('anchors', []))}, SPAM and the anchor-guided mask decoder, for zero-shot visual "
        "anomaly segmentation. Backbones: "
        f"`{config.get('lmm', '?')}` and `{config.get('sam', '?')}`.", "",
        "```python", "from agvas.infer import Segmenter", "",
        f'seg = Segmenter.from_pretrained("{repo_id}")',
        'result = seg.segment(["part.png"], mode="describe")[0]  # .mask, .anomaly_map, .text, .anomalous',
        "```", "", "## Trained on", "", *[f"- {s}" for s in trained_on], "",
    ]
    if training:
        lines += ["## Training", "",
                  f"- steps: {training.get('steps')} (planned {training.get('planned_steps')}), global batch "
                  f"{training.get('global_batch')}, {training.get('minutes')} min, seed {training.get('seed')}",
                  f"- hardware: {training.get('environment', 'not recorded')}",
                  f"- command: `{training.get('command')}`", ""]
        metrics = training.get("final_metrics") or {}
        if metrics:
            note = training.get("final_metrics_note", "the trainer's last periodic check")
            lines += [f"Final figures ({note}), percent:", "", "| metric | value |", "|---|---:|",
                      *[f"| {k} | {v} |" for k, v in metrics.items()], ""]
    return "\n".join(lines)


def push_to_hub(folder: str | Path, repo_id: str, *, private: bool = False, token: str | None = None,
                api: Any = None, message: str = "Upload AG-VAS checkpoint") -> str:
    """Upload a checkpoint folder (with a model card unless it has one) and return the repo's URL."""
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{folder} is not an AG-VAS checkpoint folder (no {CONFIG_FILE}); save one with "
                                "save_pretrained or `agvas train` first")
    if not (folder / CARD_FILE).exists():
        atomic_write_bytes(folder / CARD_FILE, model_card(folder, repo_id).encode("utf-8"))
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=message)
    return str(url)
