"""`rgalign world stats`: a world's size and the test metrics of reference rankers."""
from __future__ import annotations

import numpy as np

from ..metrics import bootstrap_weights, summarize, user_stats
from .world import World


def reference_scores(world: World, seed: int = 0) -> dict[str, np.ndarray]:
    """[n, C] scores of every sample for the random, popularity (train clicks) and oracle rankers."""
    ids, mask = world.candidates
    clicks = world.train_clicks.astype(np.float64)
    out = {"random": np.random.default_rng(seed).random(ids.shape),
           "popularity": np.where(mask, clicks[np.maximum(ids, 0)], 0.0)}
    probs = world.oracle_probs()
    if probs is not None:
        out["oracle"] = probs
    return out


def split_user_stats(world: World, split_scores: np.ndarray, split: str = "test"):
    """Per-user metric statistics of scores given for the split's requests only ([n_split, C]); with the
    expected GAUC where the world has an oracle."""
    idx = world.indices(split)
    key = ("oracle_probs", split)
    if key not in world.derived:  # every stage's evaluation reads them: built once per world and split
        probs = world.oracle_probs()
        world.derived[key] = None if probs is None else probs[idx]
    return user_stats(split_scores, world.labels[idx], world.candidates[1][idx], world.user_codes[idx],
                      probs=world.derived[key])


def split_metrics(world: World, scores: np.ndarray, split: str = "test", boot=None) -> dict:
    return summarize(split_user_stats(world, scores[world.indices(split)], split), boot)


def world_stats(world: World, headroom: bool = False, seed: int = 0) -> dict:
    idx = world.indices("test")
    boot = bootstrap_weights(len(np.unique(world.user_codes[idx])))
    refs = {name: split_metrics(world, s, "test", boot) for name, s in reference_scores(world).items()}
    out = {"world": world.name, "sizes": world.sizes(), "reference": refs}
    if headroom and world.has_needs:
        from ..ranker.headroom import measure_headroom

        out["headroom"] = measure_headroom(world, seed=seed)
    return out


def format_table(rows: dict[str, dict], keys=("gauc", "error_rate", "recall@3", "ndcg@3", "mrr")) -> str:
    """A fixed-width table of metrics with their 95% CIs."""
    head = f"{'':<18}" + "".join(f"{k:>24}" for k in keys)
    lines = [head]
    for name, m in rows.items():
        cells = []
        for k in keys:
            ci = m.get(f"{k}_ci")
            cells.append(f"{m[k]:.4f} [{ci[0]:.4f},{ci[1]:.4f}]" if ci else f"{m[k]:.4f}")
        lines.append(f"{name:<18}" + "".join(f"{c:>24}" for c in cells))
    return "\n".join(lines)
