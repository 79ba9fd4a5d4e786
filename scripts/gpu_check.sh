#!/usr/bin/env bash
# The GPU check of issue 13 (README, "GPU check"): random-init LLaVA-OneVision-7B + SAM ViT-H in bf16 on
# one CUDA GPU, no download. Four training steps at micro-batch 2 / global batch 4 under accelerate with
# DeepSpeed ZeRO-2 in one process, fast path vs generation at 7B, 8-bit and 4-bit LLM loading; one JSON.
#
#   scripts/gpu_check.sh [OUT.json]          # default docs/gpu-check-h200.json; run from anywhere
#
# What the GPU machine needs:
# - Linux x86_64, an NVIDIA GPU with bf16 (A100/H100/H200) and >= 60 GB of GPU memory (the 7B model in
#   bf16 is 16 GB; training, inference and the quantised copies come one after the other), >= 64 GB RAM
#   (training loads the LLM in fp32 on the CPU before DeepSpeed casts and moves it), >= 40 GB free disk
#   under $AGVAS_CHECK_WORKDIR or $TMPDIR (backbones 16 GB + DeepSpeed state 16 GB, removed after).
# - Python >= 3.11 with a CUDA build of torch. constraints.txt pins torch==2.13.0 for the CPU machine this
#   project is developed on (installed there from the CPU index). On the GPU machine the same file is used,
#   and pip takes torch 2.13.0 from PyPI, whose Linux wheels are the CUDA build; a CUDA torch that is
#   already installed is kept (its version replaces the pin), so nothing multi-GB is fetched twice.
# - deepspeed and bitsandbytes (not project dependencies: only this check and ZeRO training use them),
#   installed below if missing. DeepSpeed needs no compiled ops here (ZeRO-2 with torch's AdamW).
# - Network for the installs only; the check itself is offline (HF_HUB_OFFLINE=1). On a machine without
#   network, install the same packages beforehand (or carry a prepared .venv); a package that cannot be
#   installed is recorded as missing in the JSON and its part is skipped, the rest still runs.
#
# Time: the check's parts run within --budget-minutes 7 (a part starts only if its expected time is left)
# and the command is killed at 8 minutes at the latest; the JSON is rewritten after every part.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${1:-docs/gpu-check-h200.json}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
LIMIT_S="${AGVAS_CHECK_LIMIT_S:-480}"

if [[ ! -x "$PY" ]]; then
  python3 -m venv .venv
  PY="$ROOT/.venv/bin/python"
fi
PIP=("$PY" -m pip install --disable-pip-version-check)

# torch: keep an installed CUDA build, pinned at its own version; otherwise the constraints file's pin.
CONSTRAINTS="$ROOT/constraints.txt"
TORCH_CUDA="$("$PY" -c 'import torch; print(torch.__version__ if torch.cuda.is_available() else "")' 2>/dev/null || true)"
if [[ -n "$TORCH_CUDA" ]]; then
  CONSTRAINTS="$(mktemp)"
  grep -v '^torch==' "$ROOT/constraints.txt" > "$CONSTRAINTS" || true
  echo "torch==${TORCH_CUDA%%+*}" >> "$CONSTRAINTS"
  echo "keeping the installed CUDA torch $TORCH_CUDA"
fi
if ! "$PY" -c 'import agvas.check.gpu, accelerate, peft' 2>/dev/null; then
  "${PIP[@]}" -c "$CONSTRAINTS" -e '.[dev]'
fi
for pkg in deepspeed bitsandbytes; do
  if ! "$PY" -c "import $pkg" 2>/dev/null; then
    "${PIP[@]}" -c "$CONSTRAINTS" "$pkg" || echo "warning: could not install $pkg; the check records it as missing"
  fi
done
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA GPU visible to torch " + torch.__version__)'

# Backbones, training states and checkpoints go to a fresh folder inside WORK, removed on exit (only it:
# WORK may be a folder of the user's). timeout signals the launcher's whole process group.
WORK="${AGVAS_CHECK_WORKDIR:-${TMPDIR:-/tmp}}"
mkdir -p "$WORK" "$(dirname "$OUT")"
RUN_DIR="$(mktemp -d "$WORK/agvas-gpu-check.XXXXXX")"
trap 'rm -rf "$RUN_DIR"' EXIT
FREE_GB="$(df -Pk "$WORK" | awk 'NR==2 {print int($4 / 1048576)}')"
if (( FREE_GB < 40 )); then
  echo "warning: only ${FREE_GB} GB free under $WORK; the check writes about 35 GB (set AGVAS_CHECK_WORKDIR)"
fi

export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
LAUNCH=("$PY" -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision bf16
        --dynamo_backend no)
if "$PY" -c 'import deepspeed' 2>/dev/null; then
  # The training loop builds its DeepSpeed plugin from the same file (the check passes it as the recipe's
  # `deepspeed:`); the launcher's flags set up torch.distributed for it, as for a real ZeRO-2 run.
  LAUNCH+=(--use_deepspeed --deepspeed_config_file configs/deepspeed/zero2.json)
fi
set +e
timeout -k 20 "$LIMIT_S" "${LAUNCH[@]}" -m agvas.cli check --device cuda --preset llava-ov-7b \
  --budget-minutes 7 --steps 4 --micro-batch 2 --global-batch 4 --workdir "$RUN_DIR/work" --out "$OUT"
rc=$?
set -e
if (( rc == 124 || rc == 137 )); then
  echo "the check ran past ${LIMIT_S} s and was stopped; $OUT holds the parts finished before"
fi
echo "exit status $rc; report: $OUT"
exit "$rc"
