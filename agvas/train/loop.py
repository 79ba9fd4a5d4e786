"""The training loop: one script from a CPU to several GPUs with DDP or DeepSpeed (via accelerate).

Data order is a pure function of the step: optimiser step s consumes mixture indices
[s·G, (s+1)·G) for the global batch G, split into micro-batches and across processes. So a resumed run
sees exactly the samples it would have seen, and N processes see the same global batch as one.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, Sampler, get_worker_info

from agvas.data.collate import collate
from agvas.data.recipe import build_training_set
from agvas.data.sources.base import skip_counts
from agvas.io import atomic_write_json, read_json
from agvas.model.agvas import AGVASModel
from agvas.model.build import build_model
from agvas.model.config import preset_config
from agvas.model.summary import parameter_table
from agvas.train.config import TrainConfig, datasets_seen
from agvas.train.logs import MetricLog, progress_bar
from agvas.train.state import load_state, read_state_meta, remove_stale_temps, resume_latest, save_state

Evaluator = Callable[[AGVASModel, int], dict[str, float]]


class StepSampler(Sampler[int]):
    """Indices of this process's micro-batches, from optimiser step `start` to `steps`."""

    def __init__(self, start: int, steps: int, global_batch: int, micro: int, world: int, rank: int) -> None:
        self.start, self.steps, self.g = start, steps, global_batch
        self.micro, self.world, self.rank = micro, world, rank

    def __iter__(self) -> Iterator[int]:
        per_micro_step = self.micro * self.world
        for step in range(self.start, self.steps):
            base = step * self.g
            for k in range(self.g // per_micro_step):
                first = base + k * per_micro_step + self.rank * self.micro
                yield from range(first, first + self.micro)

    def __len__(self) -> int:
        return (self.steps - self.start) * self.g // self.world


def lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warm-up, then linear decay to zero (LISA's WarmupDecayLR)."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return f


def build_optimizer(model: AGVASModel, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, LambdaLR]:
    """AdamW over the trainable parameters with the warm-up/decay schedule; with `optim.fine_branch_from`
    the fine branch is a second parameter group whose rate stays 0 until that step."""
    base = lr_lambda(cfg.optim.warmup_steps, cfg.steps)
    late = cfg.optim.fine_branch_from
    if not 0 <= late < max(cfg.steps, 1):
        raise ValueError(f"optim.fine_branch_from must be in [0, steps={cfg.steps}), got {late}: the branch "
                         "would never learn")
    fine = {id(p) for p in model.fine.parameters()} if late > 0 and model.fine is not None else set()
    if late > 0 and not fine:
        raise ValueError("optim.fine_branch_from is set but the model has no fine branch (model.fine_branch)")
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if id(p) not in fine]}]
    schedules = [base]
    if fine:
        groups.append({"params": [p for p in trainable if id(p) in fine]})
        schedules.append(lambda step: base(step) if step >= late else 0.0)
    optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas,
                                  weight_decay=cfg.optim.weight_decay)
    return optimizer, LambdaLR(optimizer, schedules)


@dataclass
class TrainResult:
    step: int
    seconds: float
    metrics: dict[str, float]
    out: Path


def _accelerator(cfg: TrainConfig, accum: int):
    from accelerate import Accelerator

    mp = cfg.mixed_precision
    if mp == "auto":
        mp = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    plugin = deepspeed_plugin(cfg, accum) if cfg.deepspeed else None
    return Accelerator(gradient_accumulation_steps=accum, mixed_precision=mp, deepspeed_plugin=plugin)


def deepspeed_plugin(cfg: TrainConfig, accum: int) -> Any:
    """The recipe's DeepSpeed config with what accelerate cannot infer here filled in: an "auto" micro-batch
    is resolved from a prepared DataLoader, and the loop prepares none (it feeds its own batches)."""
    from accelerate import DeepSpeedPlugin

    plugin = DeepSpeedPlugin(hf_ds_config=cfg.deepspeed, gradient_accumulation_steps=accum,
                             gradient_clipping=cfg.optim.grad_clip)
    plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = cfg.micro_batch
    return plugin


def initial_model(cfg: TrainConfig) -> AGVASModel:
    """Fresh weights of the recipe's preset, or, with `model.init_from`, a trained checkpoint to go on from."""
    section = cfg.model
    if section.init_from is None:
        return build_model(section.preset, section.variant, lmm=section.lmm, sam=section.sam,
                           backbone_dir=Path(cfg.out) / "backbones", seed=cfg.seed, lora_rank=section.lora_rank,
                           image_weight=section.image_weight, normal_weight=section.normal_weight,
                           defect_weight=section.defect_weight, fine_branch=section.fine_branch,
                           self_reference=section.self_reference)
    model = AGVASModel.from_pretrained(section.init_from)
    expected = preset_config(section.preset, section.variant, lmm=model.config.lmm, sam=model.config.sam)
    if model.config.name != expected.name or model.config.anchors != expected.anchors:
        raise ValueError(f"model.init_from {section.init_from} is a {model.config.name} checkpoint, but the "
                         f"recipe names {expected.name}")
    weights = {k: getattr(section, k) for k in ("image_weight", "normal_weight", "defect_weight")
               if getattr(section, k) is not None}
    if weights:
        model.config = replace(model.config, **weights)
    for flag, part, add, what in (("fine_branch", model.fine, model.add_fine_branch, "a fine branch"),
                                  ("self_reference", model.reference, model.add_self_reference, "self-reference")):
        wanted = getattr(section, flag)
        if wanted:
            add()
        elif wanted is False and part is not None:
            raise ValueError(f"model.init_from {section.init_from} has {what}; model.{flag}=false cannot remove it")
    return model


def train(cfg: TrainConfig, evaluate: Evaluator | None = None, resume: bool = False,
          command: str | None = None) -> TrainResult:
    out = Path(cfg.out)
    # The launcher (accelerate launch, torchrun) says how many processes there are; the accumulation that
    # makes up the global batch must be known before the one Accelerator of the run is made.
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_micro_step = cfg.micro_batch * world
    if cfg.global_batch % per_micro_step:
        raise ValueError(f"global_batch {cfg.global_batch} must be a multiple of micro_batch × processes "
                         f"= {per_micro_step}")
    accum = cfg.global_batch // per_micro_step
    acc = _accelerator(cfg, accum)
    if acc.num_processes != world:
        raise RuntimeError(f"{acc.num_processes} processes run, but the launcher announced {world}")
    main = acc.is_main_process

    torch.manual_seed(cfg.seed)
    with acc.main_process_first():
        model = initial_model(cfg)
    model.train()
    optimizer, scheduler = build_optimizer(model, cfg)
    params = [p for group in optimizer.param_groups for p in group["params"]]  # what the clip covers

    start, elapsed = 0, 0.0
    state_dir = out / "states"
    if main:
        remove_stale_temps(state_dir)  # left by saves that a kill interrupted
    resume_from = None
    if resume:
        def warn(message: str) -> None:
            if main:
                print(f"warning: {message}", file=sys.stderr)

        # Under DeepSpeed the partitioned optimiser exists only after acc.prepare: state.json is read here.
        load = read_state_meta if cfg.deepspeed else lambda path: load_state(path, model, optimizer, scheduler)
        found = resume_latest(state_dir, load, warn)
        if found is None:
            warn(f"--resume: no saved state in {state_dir}; starting from step 0")
        else:
            resume_from, meta = found
            start, elapsed = int(meta["step"]), float(meta["extra"].get("seconds", 0.0))
    if main:
        atomic_write_json(out / "config.json", cfg.to_dict())

    dataset = build_training_set(cfg.data, model.config.anchors, length=cfg.steps * cfg.global_batch, seed=cfg.seed)
    sampler = StepSampler(start, cfg.steps, cfg.global_batch, cfg.micro_batch, world, acc.process_index)
    def collate_with_skips(samples: list[dict[str, Any]]) -> tuple[Any, tuple[int, dict[str, int]]]:
        # Runs where the samples are built (a loader worker or this process): its own count of bad files.
        info = get_worker_info()
        return model.processor(collate(samples)), (info.id if info is not None else -1, skip_counts())

    loader = DataLoader(dataset, batch_size=cfg.micro_batch, sampler=sampler, num_workers=cfg.data.num_workers,
                        collate_fn=collate_with_skips, persistent_workers=cfg.data.num_workers > 0)
    worker_skips: dict[int, dict[str, int]] = {}
    wrapped, optimizer = acc.prepare(model, optimizer)
    if resume_from is not None and cfg.deepspeed:
        load_state(resume_from, model, optimizer, scheduler, accelerator=acc)
    if main and resume_from is not None:
        print(f"resumed from {resume_from} at step {start}", file=sys.stderr)

    log = MetricLog(out, resume_step=start) if main else None
    if main:
        Console(stderr=True).print(parameter_table(model, f"training {model.config.name}"))

    t0 = time.perf_counter() - elapsed  # wall time counts over resumes, for the limit and training.json
    step = start
    metrics: dict[str, float] = {}
    sums: dict[str, float] = {}
    seen = 0
    batches = iter(loader)
    with progress_bar(disable=not main) as bar:
        task = bar.add_task("train", total=cfg.steps, completed=start, status="")
        while step < cfg.steps:
            tick = time.perf_counter()
            for _ in range(accum):
                raw, (worker, skips) = next(batches)
                worker_skips[worker] = skips
                batch = {k: (v.to(acc.device) if torch.is_tensor(v) else v) for k, v in raw.items()}
                with acc.accumulate(wrapped):
                    outputs = wrapped(**batch)
                    acc.backward(outputs.loss)
                    if acc.sync_gradients:
                        acc.clip_grad_norm_(params, cfg.optim.grad_clip)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                for k, v in outputs.loss_parts.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach()) / accum
                sums["loss"] = sums.get("loss", 0.0) + float(outputs.loss.detach()) / accum
            scheduler.step()
            step += 1
            seen += 1
            rate = cfg.global_batch / (time.perf_counter() - tick)
            if step % cfg.log_every == 0 or step == cfg.steps:
                row = {k: v / seen for k, v in sums.items()}
                row.update(lr=scheduler.get_last_lr()[0], images_per_s=rate)
                for name in sorted({n for counts in worker_skips.values() for n in counts}):  # data.sources only
                    row[f"skips/{name}"] = float(sum(c.get(name, 0) for c in worker_skips.values()))
                if log is not None:
                    log.log(step, row)
                bar.update(task, completed=step, status=f"loss {row['loss']:.3f} {rate:.1f} img/s")
                sums, seen = {}, 0
            else:
                bar.update(task, completed=step)
            limit = cfg.time_limit_minutes
            out_of_time = limit is not None and (time.perf_counter() - t0) / 60 > limit
            last = step == cfg.steps or out_of_time
            if evaluate is not None and (step % cfg.eval_every == 0 or last):
                acc.wait_for_everyone()
                if main:
                    model.eval()
                    metrics = evaluate(model, step)
                    model.train()
                    if log is not None:
                        log.log(step, {f"eval/{k}": v for k, v in metrics.items()})
                    bar.console.print(f"step {step}: " + ", ".join(f"{k} {v:.1f}" for k, v in metrics.items()))
            if step % cfg.save_every == 0 or last:
                save_state(state_dir, step, model, optimizer, scheduler, extra={"seconds": time.perf_counter() - t0},
                           accelerator=acc)
            if out_of_time:
                break
    seconds = time.perf_counter() - t0
    acc.wait_for_everyone()
    if main:
        model.eval()
        model.save_pretrained(out / "final")
        _write_summary(out, cfg, step, seconds, metrics, command, world, environment(acc.device, world))
        if log is not None:
            log.close()
    return TrainResult(step, seconds, metrics, out)


def environment(device: torch.device, processes: int) -> str:
    """The hardware a run trained on, in words, for training.json and the Hub card: a figure measured in
    minutes means nothing without it."""
    if device.type == "cuda":
        return f"{processes} × {torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    where = f"{processes} processes on " if processes > 1 else ""
    return f"{where}{cores}-core CPU ({platform.machine()}), {torch.get_num_threads()} torch threads"


def _write_summary(out: Path, cfg: TrainConfig, step: int, seconds: float, metrics: dict[str, Any],
                   command: str | None, processes: int, hardware: str) -> None:
    atomic_write_json(out / "final" / "training.json", {
        "command": command, "seed": cfg.seed, "steps": step, "planned_steps": cfg.steps, "processes": processes,
        "environment": hardware,
        "global_batch": cfg.global_batch, "seconds": round(seconds, 1),
        "minutes": round(seconds / 60, 2), "final_metrics": {k: (round(v, 2) if math.isfinite(v) else None)
                                                              for k, v in metrics.items()},
        "trained_on": trained_on(cfg),
        "config": cfg.to_dict(), "torch": torch.__version__, "python": platform.python_version(),
    })


def trained_on(cfg: TrainConfig) -> list[str]:
    """This recipe's sets, after those of the checkpoint it went on from (as that one recorded them)."""
    earlier: list[str] = []
    if cfg.model.init_from:
        summary = Path(cfg.model.init_from) / "training.json"
        earlier = list(read_json(summary).get("trained_on", [])) if summary.is_file() else []
        if not earlier:
            earlier = [f"everything {cfg.model.init_from} was trained on (not recorded)"]
    return list(dict.fromkeys([*earlier, *datasets_seen(cfg)]))
