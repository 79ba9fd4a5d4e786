"""AG-VAS checkpoints on the Hub without a network: a cache laid out as huggingface_hub lays it out, the
error when offline and not cached, and the upload with its model card (a recording stand-in for HfApi)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from model_fixtures import build

from agvas.infer import Segmenter
from agvas.infer.loading import CheckpointNotFoundError
from agvas.model.config import preset_config
from agvas.model.hub import model_card, push_to_hub

REPO = "someone/agvas-tiny-test"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def hub_cache(tiny_backbones, tmp_path_factory):
    """models--someone--agvas-tiny-test/{refs/main, snapshots/<commit>/...}: what snapshot_download leaves."""
    cache = tmp_path_factory.mktemp("hf-cache")
    repo = cache / f"models--{REPO.replace('/', '--')}"
    build(preset_config("tiny"), tiny_backbones).save_pretrained(repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return cache


def test_a_hub_id_loads_from_the_cache_offline(hub_cache):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    from_hub = Segmenter.from_pretrained(REPO, device="cpu", cache_dir=hub_cache)
    local = Segmenter.from_pretrained(hub_cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT,
                                      device="cpu")
    assert from_hub.source.startswith(f"hub:{REPO}")
    image = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    a, b = from_hub.segment([image])[0], local.segment([image])[0]
    assert np.array_equal(a.anomaly_map, b.anomaly_map) and a.text == b.text


def test_offline_and_not_cached_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="neither a local folder nor in the Hugging Face cache"):
        Segmenter.from_pretrained("someone/not-downloaded", device="cpu", cache_dir=tmp_path)
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):  # not a Hub id either
        Segmenter.from_pretrained(str(tmp_path / "missing" / "deeper" / "folder"), device="cpu")


def test_the_cli_takes_a_hub_id(hub_cache, tmp_path):
    image = tmp_path / "part.png"
    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(image)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "agvas.cli", "segment", str(image), "--checkpoint", REPO,
                           "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "out" / "part_mask.png").is_file()


class RecordingApi:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))


def test_push_uploads_the_folder_with_a_card_from_training_json(hub_cache, tmp_path, tiny_backbones):
    folder = build(preset_config("tiny"), tiny_backbones).save_pretrained(tmp_path / "ckpt")
    (folder / "training.json").write_text(json.dumps({
        "steps": 5000, "planned_steps": 5000, "global_batch": 8, "minutes": 61.2, "seed": 0,
        "environment": "2-core CPU", "command": "agvas train --config configs/tiny.yaml",
        "trained_on": ["synthetic (agvas.data.synth, procedural textures)", "textures: ../shared/data/dtd"],
        "final_metrics": {"ap": 32.5, "iou_nor": 7.14}}))
    api = RecordingApi()
    url = push_to_hub(folder, "me/agvas-tiny", private=True, api=api)
    assert url == "https://huggingface.co/me/agvas-tiny"
    assert api.calls[0] == ("create_repo", {"repo_id": "me/agvas-tiny", "private": True, "exist_ok": True})
    assert api.calls[1][1]["folder_path"] == str(folder) and api.calls[1][1]["repo_id"] == "me/agvas-tiny"
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: agvas") and "- textures: ../shared/data/dtd" in card
    assert "| ap | 32.5 |" in card and 'Segmenter.from_pretrained("me/agvas-tiny")' in card

    (folder / "README.md").write_text("my own card")  # an author's card is kept
    push_to_hub(folder, "me/agvas-tiny", api=RecordingApi())
    assert (folder / "README.md").read_text() == "my own card"
    with pytest.raises(FileNotFoundError, match="not an AG-VAS checkpoint folder"):
        push_to_hub(tmp_path, "me/x", api=RecordingApi())
    assert "not recorded" in model_card(tmp_path, "me/x")
