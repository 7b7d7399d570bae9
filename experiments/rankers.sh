#!/bin/bash
# Issue 3's ranker figures: two-tower, QE-Rec on each teacher, QE-Rec on the warm tiny reasoner, oracle.
#   bash experiments/rankers.sh [OUT=runs/bench_rankers] [SEED=0] [GAP=on] [BIAS=on]
# Prints one JSON line per ranker (test split, 95% user-bootstrap CIs) and times each step.
set -euo pipefail
OUT=${1:-runs/bench_rankers}; SEED=${2:-0}; GAP=${3:-on}; BIAS=${4:-on}
RG=${RG:-.venv/bin/rgalign}
W=$OUT/world
mkdir -p "$OUT"
t() { local s=$(date +%s); "$@"; echo "# $(( $(date +%s) - s )) s: $*" >&2; }
t $RG world shopsim --out "$W" --seed "$SEED" --size default --semantic-gap "$GAP" --teacher-bias "$BIAS" >/dev/null
t $RG world stats "$W" --json > "$OUT/stats.json"
t $RG ranker train --world "$W" --arch two_tower --out "$OUT/two_tower" --seed "$SEED" >"$OUT/two_tower.log"
echo "{\"ranker\": \"two_tower\", \"m\": $($RG ranker eval --world "$W" --ranker "$OUT/two_tower" --json)}"
for T in $(python3 -c "import json;print(' '.join(sorted({json.loads(l)['teacher'] for l in open('$W/teachers.jsonl')})))"); do
  t $RG ranker train --world "$W" --arch qe_rec --queries "teacher:$T" --out "$OUT/qe_$T" --seed "$SEED" >"$OUT/qe_$T.log"
  echo "{\"ranker\": \"qe_rec teacher:$T\", \"m\": $($RG ranker eval --world "$W" --ranker "$OUT/qe_$T" --json)}"
done
t $RG reasoner tiny --world "$W" --out "$OUT/reasoner_warm" >"$OUT/reasoner.log" 2>&1
for MODE in last_token text; do
  t $RG ranker train --world "$W" --arch qe_rec --queries "reasoner:$OUT/reasoner_warm" --query-mode $MODE \
    --out "$OUT/qe_warm_$MODE" --seed "$SEED" >"$OUT/qe_warm_$MODE.log"
  echo "{\"ranker\": \"qe_rec reasoner:warm ($MODE)\", \"m\": $($RG ranker eval --world "$W" --ranker "$OUT/qe_warm_$MODE" --json)}"
done
python3 -c "import json; d=json.load(open('$OUT/stats.json')); print(json.dumps({'ranker': 'oracle', 'm': d['reference']['oracle']})); print(json.dumps({'ranker': 'headroom', 'm': d['headroom']}))"
