"""The trainer: config validation, deterministic data order, kill-and-resume, two processes = one."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from agvas.train.config import load_train_config
from agvas.train.loop import StepSampler, lr_lambda

RECIPE = {
    "seed": 3, "steps": 6, "micro_batch": 2, "global_batch": 2, "eval_every": 1000, "save_every": 2,
    "log_every": 1,
    "model": {"preset": "tiny"},
    "data": {"image_size": 64, "eval_images": 0, "num_workers": 0},
    "optim": {"lr": 1e-3, "warmup_steps": 2},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def recipe(tmp_path: Path, **changes) -> Path:
    raw = {**RECIPE, **changes}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_cli(*args: str, env_extra: dict | None = None, **popen) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "agvas.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def test_config_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 3\noptim: {lrr: 1}\n")
    with pytest.raises(ValueError, match="unknown key.*lrr"):
        load_train_config(bad)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_train_config(tmp_path / "nope.yaml")
    bad.write_text("micro_batch: 3\nglobal_batch: 8\n")
    with pytest.raises(ValueError, match="multiple of micro_batch"):
        load_train_config(bad)
    cfg = load_train_config(recipe(tmp_path), {"optim.lr": 0.5, "steps": 9})
    assert cfg.optim.lr == 0.5 and cfg.steps == 9 and cfg.data.image_size == 64
    # YAML reads 3e-4 (no dot) as a string: numbers are taken as their fields declare them
    bad.write_text("steps: '40'\noptim: {lr: 3e-4, warmup_steps: 1.0e1}\ndata: {glare: 1, real_normal_rate: null}\n")
    cfg = load_train_config(bad, {"data.exposure": "0.25"})
    assert (cfg.steps, cfg.optim.lr, cfg.optim.warmup_steps) == (40, 3e-4, 10)
    assert isinstance(cfg.optim.lr, float) and isinstance(cfg.steps, int)
    assert (cfg.data.glare, cfg.data.exposure, cfg.data.real_normal_rate) == (1.0, 0.25, None)
    for key, value, message in [("optim.lr", "fast", "optim.lr: expected a float, got 'fast'"),
                                ("steps", 2.5, "steps: expected an integer, got 2.5"),
                                ("data.augment_real", "yes please", "data.augment_real: expected a bool"),
                                ("optim.lr", None, "optim.lr: expected a float, got None")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            load_train_config(bad, {key: value})


def test_data_order_is_a_function_of_the_step():
    one = list(StepSampler(0, 3, global_batch=8, micro=2, world=1, rank=0))
    assert one == list(range(24))
    two = [list(StepSampler(0, 3, 8, 2, 2, r)) for r in range(2)]
    assert sorted(two[0] + two[1]) == one  # two processes cover the same global batches
    assert two[0][:4] == [0, 1, 4, 5] and two[1][:4] == [2, 3, 6, 7]
    assert list(StepSampler(2, 3, 8, 2, 1, 0)) == list(range(16, 24))  # resuming at step 2
    f = lr_lambda(2, 10)
    assert [round(f(s), 3) for s in (0, 1, 2, 6, 10)] == [0.5, 1.0, 1.0, 0.5, 0.0]


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    states = sorted((out / "states").glob("state-*"))
    assert states[-1].name == "state-00000006"
    return load_file(str(states[-1] / "weights.safetensors"))


def test_killed_and_resumed_run_ends_bit_for_bit_like_an_uninterrupted_one(tmp_path):
    path = recipe(tmp_path, micro_batch=1)  # two micro-batches accumulated per step
    finish(run_cli("train", "--config", str(path), "--out", str(tmp_path / "straight")))
    straight = _final_weights(tmp_path / "straight")

    out = tmp_path / "killed"
    proc = run_cli("train", "--config", str(path), "--out", str(out))
    deadline = time.time() + 300
    while not list((out / "states").glob("state-00000002")) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    states = sorted(p.name for p in (out / "states").glob("state-*"))
    assert states and "state-00000006" not in states, states
    assert not list((out / "final").glob("*")) if (out / "final").exists() else True
    finish(run_cli("train", "--config", str(path), "--out", str(out), "--resume"))
    resumed = _final_weights(out)
    assert set(resumed) == set(straight)
    for name, value in straight.items():
        assert torch.equal(value, resumed[name]), name
    assert (out / "final" / "training.json").is_file()
    rows = (out / "log.csv").read_text().splitlines()
    steps = [int(float(r.split(",")[0])) for r in rows[1:]]
    assert steps == sorted(set(steps)) and steps[-1] == 6  # no step logged twice after the resume


def test_two_processes_give_the_gradients_of_one(tmp_path):
    """Read from the saved state: after one AdamW step from zero moments, each first moment is exactly
    (1 - beta1) times that step's synchronised gradient (clipping is lifted so that it cannot rescale)."""
    path = recipe(tmp_path, steps=1, global_batch=4, save_every=1000, optim={**RECIPE["optim"], "grad_clip": 1.0e9})
    finish(run_cli("train", "--config", str(path), "--out", str(tmp_path / "one"), "--set", "micro_batch=4"))
    # accelerate's --cpu flag runs a single process; --multi_gpu with ACCELERATE_USE_CPU runs two on the CPU.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    launch = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no",
         "--dynamo_backend", "no", "-m", "agvas.cli", "train", "--config", str(path), "--out", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert launch.returncode == 0, launch.stdout + launch.stderr
    summary = json.loads((tmp_path / "two" / "final" / "training.json").read_text())
    assert summary["processes"] == 2  # really two processes, each with half of the global batch
    one, two = (load_file(str(tmp_path / run / "states" / "state-00000001" / "optimizer.safetensors"))
                for run in ("one", "two"))
    moments = [k for k in one if k.endswith(".exp_avg")]
    assert set(one) == set(two) and len(moments) > 50
    for name in moments:  # (1 - beta1) * gradient, so the gradients' atol of 1e-6 becomes 1e-7
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-7, msg=name)


def test_log_rows_merge_evaluation_into_their_step_and_survive_a_resume(tmp_path):
    from agvas.train.logs import MetricLog

    log = MetricLog(tmp_path, tensorboard=False)
    log.log(10, {"loss": 2.0})
    log.log(10, {"eval/ap": 30.0})
    log.log(20, {"loss": 1.0})
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows[0] == "step,loss,eval/ap" and rows[1] == "10,2.0,30.0" and rows[2].startswith("20,1.0")
    resumed = MetricLog(tmp_path, resume_step=10, tensorboard=False)
    resumed.log(20, {"loss": 1.5})
    assert (tmp_path / "log.csv").read_text().splitlines()[2].startswith("20,1.5")


def test_training_on_real_meta_roots_with_a_real_validation_set(tmp_path):
    """Regression for the first-step crash with `data.anomaly_datasets`, and the val_* figures in log.csv."""
    from test_real_sources import make_visa_like

    train_root = make_visa_like(tmp_path / "visa")
    val_root = make_visa_like(tmp_path / "tire", n_good=3, n_bad=3)
    data = {**RECIPE["data"], "eval_images": 4, "validation": [str(val_root)], "validation_images": 4,
            "anomaly_datasets": [{"root": str(train_root), "splits": ["train", "test"], "weight": 1}],
            "real_share": 0.9}
    path = recipe(tmp_path, steps=2, eval_every=2, data=data)
    finish(run_cli("train", "--config", str(path), "--out", str(tmp_path / "run")))
    header = (tmp_path / "run" / "log.csv").read_text().splitlines()[0].split(",")
    assert {"eval/ap", "eval/val_ap", "eval/val_iou_nor"} <= set(header)
    summary = json.loads((tmp_path / "run" / "final" / "training.json").read_text())
    assert summary["config"]["data"]["anomaly_datasets"][0]["root"] == str(train_root)
    assert f"anomaly set: {train_root}" in summary["trained_on"]  # which sets, so which licences, it saw
    assert "-core CPU (" in summary["environment"]  # the hardware its minutes were measured on


def test_a_second_stage_starts_from_a_checkpoint_with_the_image_term(tmp_path, tiny_backbones):
    """`model.init_from` goes on from a trained checkpoint (its weights, its architecture); a recipe that
    names another variant is refused rather than silently retrained."""
    from model_fixtures import build

    from agvas.model.config import preset_config
    from agvas.train.loop import initial_model, trained_on

    first = build(preset_config("tiny"), tiny_backbones, seed=5).save_pretrained(tmp_path / "stage1")
    path = recipe(tmp_path, model={"preset": "tiny", "init_from": str(first), "image_weight": 1.0,
                                   "normal_weight": 2.0, "defect_weight": 0.5})
    model = initial_model(load_train_config(path))
    assert (model.config.image_weight, model.config.normal_weight, model.config.defect_weight) == (1.0, 2.0, 0.5)
    saved = load_file(str(first / "model.safetensors"))
    state = model.state_dict()
    shared = [k for k in saved if k in state]
    assert len(shared) == len(saved) > 0 and all(torch.equal(state[k], saved[k]) for k in shared)
    assert any(p.requires_grad for p in model.parameters())

    (first / "training.json").write_text(json.dumps({"trained_on": ["textures: /data/dtd"]}))
    seen = trained_on(load_train_config(path))  # a second stage has seen what its first stage saw, too
    assert seen[0] == "textures: /data/dtd" and any(s.startswith("synthetic") for s in seen)

    path = recipe(tmp_path, model={"preset": "tiny", "variant": "lisa", "init_from": str(first)})
    with pytest.raises(ValueError, match="tiny/agvas checkpoint, but the recipe names tiny/lisa"):
        initial_model(load_train_config(path))

    path = recipe(tmp_path, model={"preset": "tiny", "init_from": str(first), "fine_branch": True})
    model = initial_model(load_train_config(path))  # the branch is added to the first stage's model
    assert model.config.fine_branch and model.fine is not None and model.fine.proj.weight.requires_grad
    state = model.state_dict()
    assert all(torch.equal(state[k], saved[k]) for k in saved)
    fine_first = model.save_pretrained(tmp_path / "fine")
    path = recipe(tmp_path, model={"preset": "tiny", "init_from": str(fine_first), "fine_branch": False})
    with pytest.raises(ValueError, match="has a fine branch; model.fine_branch=false cannot remove it"):
        initial_model(load_train_config(path))

    path = recipe(tmp_path, model={"preset": "tiny", "init_from": str(fine_first), "self_reference": True})
    model = initial_model(load_train_config(path))  # both parts: the fine branch kept, self-reference added
    assert model.config.fine_branch and model.config.self_reference and model.reference.proj.weight.requires_grad
    both = model.save_pretrained(tmp_path / "both")
    path = recipe(tmp_path, model={"preset": "tiny", "init_from": str(both), "self_reference": False})
    with pytest.raises(ValueError, match="has self-reference; model.self_reference=false cannot remove it"):
        initial_model(load_train_config(path))


@pytest.mark.parametrize("config", ["zero2.json", "zero3.json"])
def test_deepspeed_gets_the_recipes_micro_batch(tmp_path, config):
    """The shipped DeepSpeed configs say "auto", which accelerate resolves only from a prepared DataLoader;
    the loop prepares none, so without this accelerate.prepare refuses to start."""
    from agvas.train.loop import deepspeed_plugin

    path = recipe(tmp_path, micro_batch=2, global_batch=8,
                  deepspeed=str(Path(__file__).parents[1] / "configs" / "deepspeed" / config))
    plugin = deepspeed_plugin(load_train_config(path), accum=4)
    assert plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == 2
    assert not plugin.is_auto("train_micro_batch_size_per_gpu")
    assert plugin.deepspeed_config["gradient_accumulation_steps"] == 4


def test_the_fine_branch_learns_only_from_optim_fine_branch_from(tmp_path, tiny_backbones):
    """A late fine branch is a parameter group on the run's schedule whose rate is 0 before its step: it
    stays the no-op it starts as while everything else learns, then learns at the common rate."""
    from dataclasses import replace

    from model_fixtures import build

    from agvas.model.config import preset_config
    from agvas.train.loop import build_optimizer

    model = build(replace(preset_config("tiny"), fine_branch=True), tiny_backbones).train()
    cfg = load_train_config(recipe(tmp_path, steps=10, optim={"lr": 1e-3, "warmup_steps": 0,
                                                             "fine_branch_from": 3}))
    optimizer, scheduler = build_optimizer(model, cfg)
    fine = list(model.fine.parameters())
    rest = [p for p in model.parameters() if p.requires_grad and all(p is not f for f in fine)]
    assert [len(g["params"]) for g in optimizer.param_groups] == [len(rest), len(fine)]
    fine_start = [p.detach().clone() for p in fine]
    lrs = []
    for _ in range(5):
        for p in model.parameters():
            p.grad = torch.ones_like(p) if p.requires_grad else None
        before = [p.detach().clone() for p in fine]
        optimizer.step()
        scheduler.step()
        lrs.append([g["lr"] for g in optimizer.param_groups])
        moved = any(not torch.equal(a, p) for a, p in zip(before, fine, strict=True))
        assert moved == (len(lrs) > 3), f"step {len(lrs) - 1}: fine branch moved={moved}"
    assert [round(b, 6) for _, b in lrs[:2]] == [0.0, 0.0] and lrs[3][1] == lrs[3][0] > 0
    assert not torch.equal(fine_start[-1], fine[-1])

    no_branch = build(preset_config("tiny"), tiny_backbones)
    with pytest.raises(ValueError, match="fine_branch_from is set but the model has no fine branch"):
        build_optimizer(no_branch, cfg)
    with pytest.raises(ValueError, match=r"fine_branch_from must be in \[0, steps=10\), got 10"):
        build_optimizer(model, load_train_config(recipe(tmp_path, steps=10, optim={"fine_branch_from": 10})))
    one_group, _ = build_optimizer(model, load_train_config(recipe(tmp_path)))  # 0: one group, as before
    assert len(one_group.param_groups) == 1
