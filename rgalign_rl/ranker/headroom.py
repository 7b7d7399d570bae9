"""A world's headroom: what the true need's text is worth to a ranker (DESIGN.md section 7).

QE-Rec given the oracle's need text as its query vs the two-tower baseline, same data, same seed,
compared on the test split with a paired user bootstrap. No reasoner can add more than this to a QE-Rec of
the loop's design (gated, nested in the two-tower).
"""
from __future__ import annotations

import numpy as np

from ..metrics import bootstrap_weights, paired_difference, summarize, user_stats
from ..world import World
from .queries import query_embeddings, query_text_dims
from .train import RankerData, TrainConfig, score, train_ranker


def need_ranker(world: World, cfg: TrainConfig, arch: str = "qe_rec_gated", log=lambda *a: None, **train_kw) -> tuple:
    """(QE-Rec of design ``arch`` trained with the true need's text as every request's query, the RankerData
    it reads, its training history); ``train_kw``: train_ranker's (a nesting two-tower and its encoder,
    ``query_text``)."""
    q = query_embeddings(world, "need", "text")
    model, enc, hist = train_ranker(world, arch, q, cfg, log=log, **{"query_text": query_text_dims("text"), **train_kw})
    return model, RankerData(world, enc, q), hist


def headroom_rankers(world: World, seed: int = 0, log=lambda *a: None) -> dict:
    """{"without": (two-tower, data), "with_need": need_ranker(...)}, trained on the world's train split;
    ``data`` is the RankerData each reads (experiments/need_readout.py feeds the second other queries)."""
    model, enc, _ = train_ranker(world, "two_tower", None, TrainConfig(seed=seed), log=log)
    with_need = need_ranker(world, TrainConfig(seed=seed), log=log, nest=model, encoder=enc)[:2]  # the loop's QE-Rec design
    return {"without": (model, RankerData(world, enc)), "with_need": with_need}


def measure_headroom(world: World, seed: int = 0, log=lambda *a: None) -> dict:
    idx = world.indices("test")
    labels, mask, users = world.labels[idx], world.candidates[1][idx], world.user_codes[idx]
    boot = bootstrap_weights(len(np.unique(users)))
    stats = {name: user_stats(score(model, data, idx), labels, mask, users)
             for name, (model, data) in headroom_rankers(world, seed, log).items()}
    diff = paired_difference(stats["without"], stats["with_need"], boot)
    return {"without": summarize(stats["without"], boot), "with_need": summarize(stats["with_need"], boot),
            "gauc_gain": diff["gauc"]["diff"], "gauc_gain_ci": diff["gauc"]["ci"]}
