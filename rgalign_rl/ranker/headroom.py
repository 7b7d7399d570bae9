"""A world's headroom: what the true need's text is worth to a ranker (DESIGN.md section 7).

QE-Rec given the oracle's need text as its query vs the two-tower baseline, same data, same seed,
compared on the test split with a paired user bootstrap. No reasoner can add more than this.
"""
from __future__ import annotations

import numpy as np

from ..metrics import bootstrap_weights, paired_difference, summarize, user_stats
from ..world import World
from .queries import query_embeddings
from .train import RankerData, TrainConfig, score, train_ranker


def measure_headroom(world: World, seed: int = 0, log=lambda *a: None) -> dict:
    idx = world.indices("test")
    labels, mask, users = world.labels[idx], world.candidates[1][idx], world.user_codes[idx]
    boot = bootstrap_weights(len(np.unique(users)))
    stats = {}
    for name, spec, arch in (("without", "none", "two_tower"), ("with_need", "need", "qe_rec")):
        q = query_embeddings(world, spec, "text")
        model, enc, _ = train_ranker(world, arch, q, TrainConfig(seed=seed), log=log)
        stats[name] = user_stats(score(model, RankerData(world, enc, q), idx), labels, mask, users)
    diff = paired_difference(stats["without"], stats["with_need"], boot)
    return {"without": summarize(stats["without"], boot), "with_need": summarize(stats["with_need"], boot),
            "gauc_gain": diff["gauc"]["diff"], "gauc_gain_ci": diff["gauc"]["ci"]}
