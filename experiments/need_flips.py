"""Does the frozen QE-Rec reward naming the true need? On the test requests where a stage's query newly names
the request's true need (or stops naming it), how often its expected request AUC rises (or falls).

    python experiments/need_flips.py RUN round1/rg_sft round1/calibrate

Reads the run's kept test scores (scores/<stage>.npy) and its reasoners' test queries (the generation cache);
compares each stage with QE-Rec's (the warm reasoner's queries, the same ranker for round 1's reasoner stages).
"""
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgalign_rl.align.diagnostics import need_hits  # noqa: E402
from rgalign_rl.align.evaluate import scores_file  # noqa: E402
from rgalign_rl.diagnose import expected_request_auc, snapshot  # noqa: E402
from rgalign_rl.reasoner.queries import reasoner_queries  # noqa: E402
from rgalign_rl.world import load_world  # noqa: E402

run = sys.argv[1]
m, done = json.load(open(f"{run}/metrics.json")), json.load(open(f"{run}/state.json"))["done"]
w = load_world(m["world"])
test = w.indices("test")
probs, mask = w.oracle_probs()[test], w.candidates[1][test]


def stage(key):
    q = reasoner_queries(w, snapshot(done, key), test, max_new_tokens=m["config"]["reasoner"]["max_new_tokens"])[1]
    return need_hits(w, test, q), expected_request_auc(np.load(scores_file(run, key)), probs, mask)


h0, a0 = stage("qe_rec")
for key in sys.argv[2:]:
    h1, a1 = stage(key)
    d, up, down = a1 - a0, ~h0 & h1, h0 & ~h1
    print(f"{key}: need accuracy {h0.mean():.3f} -> {h1.mean():.3f}; became right {up.sum()}: AUC rose on "
          f"{np.mean(d[up] > 0):.3f} (mean {np.nanmean(d[up]):+.4f}); became wrong {down.sum()}: AUC fell on "
          f"{np.mean(d[down] < 0):.3f} (mean {np.nanmean(d[down]):+.4f})")
