"""Training states that a kill or a bad disk has damaged: named errors, fallback, no piled-up temp folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from agvas.train.state import StateError, load_state, remove_stale_temps, resume_latest, save_state


def _parts(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


def _two_states(folder: Path) -> tuple[Path, Path]:
    model, optimizer, scheduler = _parts()
    first = save_state(folder, 1, model, optimizer, scheduler)
    second = save_state(folder, 2, model, optimizer, scheduler)
    return first, second


def _truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


@pytest.mark.parametrize("damage", [
    lambda s: _truncate(s / "weights.safetensors"),
    lambda s: (s / "optimizer.safetensors").write_bytes(b"\xff" * 64),  # garbage header
    lambda s: (s / "rng.safetensors").unlink(),
    lambda s: (s / "state.json").write_text("{not json"),
    lambda s: (s / "state.json").write_text(json.dumps({"step": 2})),
], ids=["truncated", "garbage-header", "missing-file", "bad-json", "json-lacks-keys"])
def test_a_corrupt_state_is_a_named_error(tmp_path, damage):
    _, second = _two_states(tmp_path)
    damage(second)
    model, optimizer, scheduler = _parts(seed=1)
    with pytest.raises(StateError, match=r"state .*state-00000002: \w+\.(safetensors|json)"):
        load_state(second, model, optimizer, scheduler)


def test_resume_falls_back_to_the_newest_intact_state_and_names_the_skipped_one(tmp_path):
    first, second = _two_states(tmp_path)
    _truncate(second / "weights.safetensors")
    model, optimizer, scheduler = _parts(seed=1)
    warnings: list[str] = []
    found = resume_latest(tmp_path, lambda p: load_state(p, model, optimizer, scheduler), warnings.append)
    assert found is not None and found[0] == first and found[1]["step"] == 1
    assert len(warnings) == 1 and "state-00000002" in warnings[0] and "weights.safetensors" in warnings[0]
    _truncate(first / "weights.safetensors")
    with pytest.raises(StateError, match="no intact training state"):
        resume_latest(tmp_path, lambda p: load_state(p, model, optimizer, scheduler), warnings.append)
    assert resume_latest(tmp_path / "empty", lambda p: {}, warnings.append) is None


def test_stale_temp_folders_are_removed_after_a_save(tmp_path):
    stale = tmp_path / ".state-00000007.abc123"
    stale.mkdir(parents=True)
    (stale / "weights.safetensors").write_bytes(b"half")
    _two_states(tmp_path)
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state-00000001", "state-00000002"]
    stale.mkdir()
    assert remove_stale_temps(tmp_path) == [stale] and not stale.exists()
    assert remove_stale_temps(tmp_path / "missing") == []


def test_train_resume_says_when_there_is_no_state_and_skips_a_corrupt_one(tmp_path):
    from test_train import finish, recipe, run_cli

    path, out = recipe(tmp_path, steps=2, save_every=1), tmp_path / "run"
    log = finish(run_cli("train", "--config", str(path), "--out", str(out), "--resume"))
    assert log.count("no saved state") == 1, log
    _truncate(out / "states" / "state-00000002" / "weights.safetensors")
    stale = out / "states" / ".state-00000003.killed"
    stale.mkdir()
    log = finish(run_cli("train", "--config", str(path), "--out", str(out), "--resume", "--set", "steps=3"))
    assert log.count("skipping a corrupt training state") == 1 and "state-00000002: weights.safetensors" in log, log
    assert "state-00000001 at step 1" in log and not stale.exists()
    assert json.loads((out / "final" / "training.json").read_text())["steps"] == 3
