#!/bin/bash
# The prepared GPU check: the tiny loop on one GPU without DeepSpeed, with ZeRO-2 and with ZeRO-3, and every
# aligner (dpo, ppo, grpo, rloo) from the same RG-SFT checkpoint; prints the card, then wall time and peak
# GPU memory per stage (bench/gpu_check_table.py). About 5-8 minutes on one GPU, plus a start per launch: 12
# launches do not fit a 15-minute device lease. On such a lease run bench/gpu_smoke.sh (ONE launch, <= 5 minutes:
# ZeRO-3 with every weight partitioned, LoRA DPO and PPO, determinism mismatch rates); this is the longer,
# optional check. (Its ZeRO-3 config keeps DeepSpeed's default persistence threshold: the tiny reasoner stays whole.)
#   bench/gpu_check.sh [OUT]            NPROC=N: N processes per launch (default 1)
#   DRY_RUN=1 bench/gpu_check.sh OUT    CI's CPU dry run: no DeepSpeed, dpo and ppo only
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu_check}
NPROC=${NPROC:-1}
PORT=${PORT:-29640}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$OUT/torch_ext} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
[ -x .venv/bin/rgalign ] && export PATH=$PWD/.venv/bin:$PATH
engines="accelerate_config.yaml recipes/accelerate/deepspeed_zero2.yaml recipes/accelerate/deepspeed_zero3.yaml"
algos="dpo ppo grpo rloo"
if [ "${DRY_RUN:-0}" = 1 ]; then engines="accelerate_config.yaml"; algos="dpo ppo"; fi
mkdir -p "$OUT"
python -c "import torch; print('device:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu (no GPU)')" | tee "$OUT/device.txt"
[ -f "$OUT/world/world.json" ] || rgalign world shopsim --out "$OUT/world" --seed 0 --size tiny >/dev/null
for cfg in $engines; do
  engine=$(basename "$cfg" .yaml)
  mkdir -p "$OUT/$engine"
  first=""
  for algo in $algos; do
    run="$OUT/$engine/$algo"
    [ -f "$run/metrics.json" ] && { first=${first:-$run}; continue; }
    resume=""
    if [ -n "$first" ]; then  # the shared stages up to RG-SFT come from the first aligner's run
      mkdir -p "$run"
      python - "$first/state.json" "$run/state.json" <<'PY'
import json, sys
done = json.load(open(sys.argv[1]))["done"]
keep = {k: v for k, v in done.items() if not k.startswith("round1/") or k == "round1/rg_sft"}
json.dump({"done": keep}, open(sys.argv[2], "w"), indent=1)
PY
      cp -r "$first/scores" "$run/scores"
      resume="--resume"
    fi
    PORT=$((PORT + 1))
    accelerate launch --config_file "$cfg" --num_processes "$NPROC" --main_process_port "$PORT" recipes/rgalign.py \
      --config recipes/configs/shopsim_tiny.yaml --world "$OUT/world" --out "$run" $resume \
      align.algorithm=$algo log.progress=false >"$run.log" 2>&1 || { echo "FAILED: $engine $algo (see $run.log)"; exit 1; }
    first=${first:-$run}
  done
done
python bench/gpu_check_table.py "$OUT" | tee "$OUT/table.md"
