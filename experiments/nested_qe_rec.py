"""QE-Rec nested in a trained two-tower (query paths start at zero, epoch 0 = the baseline) vs the
baseline, for a warm reasoner's queries and a teacher's. Needs the outputs of experiments/rankers.sh.

    python experiments/nested_qe_rec.py [runs/bench_rankers]
"""
import sys

import numpy as np
import torch

from rgalign_rl.ranker.queries import query_embeddings
from rgalign_rl.ranker.train import RankerData, TrainConfig, load_ranker, score, train_ranker
from rgalign_rl.world import load_world
from rgalign_rl.world.stats import split_metrics

torch.set_num_threads(2)
root = sys.argv[1] if len(sys.argv) > 1 else "runs/bench_rankers"
world = load_world(f"{root}/world")
two_tower, enc, _ = load_ranker(f"{root}/two_tower")
every = np.arange(len(world.samples))
print(f"two_tower test GAUC {split_metrics(world, score(two_tower, RankerData(world, enc), every))['gauc']:.4f}")
for spec, mode in ((f"reasoner:{root}/reasoner_warm", "last_token"), ("teacher:atlas", "text")):
    q = query_embeddings(world, spec, mode)
    model, e, hist = train_ranker(world, "qe_rec", q, TrainConfig(), encoder=enc, nest=two_tower, log=lambda *a: None)
    g = split_metrics(world, score(model, RankerData(world, e, q), every))["gauc"]
    print(f"nested qe_rec {spec} ({mode}): test GAUC {g:.4f}; valid GAUC by epoch {[round(h['valid_gauc'], 4) for h in hist]}")
