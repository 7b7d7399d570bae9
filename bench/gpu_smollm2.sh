#!/bin/bash
# The GPU experiment of issue 16: recipes/configs/smollm2.yaml (SmolLM2-135M-Instruct reasoner) on ShopSim default,
# seed 0, on one GPU (TRL trains in bf16 where the GPU supports it; the reasoner serves in bf16). Prints the
# card, then each stage's wall time and peak memory and the headline table (QE-Rec vs two-tower, final vs QE-Rec,
# share of the headroom captured): bench/gpu_smollm2_table.py. Target: ~9 minutes on one GPU.
#   bench/gpu_smollm2.sh [OUT]             the experiment
#   DRY_RUN=1 bench/gpu_smollm2.sh OUT     CI's CPU dry run at toy size: the same script, smollm2_tiny.yaml on a
#                                          24-request slice of the tiny world, one 2-example step per stage
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu_smollm2}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
[ -x .venv/bin/rgalign ] && export PATH=$PWD/.venv/bin:$PATH
mkdir -p "$OUT"
python -c "import torch; print('device:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu (no GPU)')" | tee "$OUT/device.txt"
if [ "${DRY_RUN:-0}" = 1 ]; then
  [ -f "$OUT/world/world.json" ] || {
    rgalign world shopsim --out "$OUT/full_world" --seed 0 --size tiny >/dev/null
    rgalign world subset "$OUT/full_world" --out "$OUT/world" --requests 24 --seed 0 >/dev/null; }
  config=recipes/configs/smollm2_tiny.yaml
  # one optimizer step of 2 examples per training stage (DPO: one pair, its chosen and rejected padded together):
  # the path, not the learning (a step of 8 ~510-token examples costs ~60 s on 2 CPU cores)
  # align.probe.prompts=0: the probe (two samplings of valid prompts with their reward and KL) was a third of the
  # DPO stage here; the stage evaluations sample and score the same path
  # ranker.nest=false: on 16 training requests a nested query term (starting at zero) never opens, and RG-CL
  # would be rolled back untrained (the ranker ignores the query); a QE-Rec from scratch reads it at once
  # reasoner.max_new_tokens=6 and eval.max_valid=2: each decoding step reads all 135M weights (memory-bound on a
  # CPU), and batches follow tail widths, so half the tokens is about half of every generation's decoding
  args=(--world "$OUT/world" ranker.nest=false reasoner.max_new_tokens=6 reasoner.warm.max_pairs=2 reasoner.warm.batch_size=2 best_of_n.max_requests=2
        best_of_n.sft.batch_size=2 align.max_requests=2 align.dpo.max_pairs=1 align.dpo.batch_size=1
        align.reward_budget=8 align.probe.prompts=0 rg_cl.max_requests=2 rg_cl.batch_size=2
        ranker.calib_max_requests=8 eval.max_valid=2)
else
  config=recipes/configs/smollm2.yaml
  args=(log.progress=false)
fi
SECONDS=0
rgalign run --config "$config" --out "$OUT/run" "${args[@]}" >"$OUT/run.log" 2>&1 ||
  { echo "FAILED after ${SECONDS}s (see $OUT/run.log): $(tail -1 "$OUT/run.log")"; exit 1; }
echo "loop: ${SECONDS}s" | tee "$OUT/wall.txt"
python bench/gpu_smollm2_table.py "$OUT" | tee "$OUT/table.md"
