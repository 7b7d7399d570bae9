"""`rgalign world stats`: a world's size and the test metrics of reference rankers."""
from __future__ import annotations

import numpy as np

from ..metrics import bootstrap_weights, summarize, user_stats
from .world import World


def reference_scores(world: World, idx: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """[len(idx), C] scores of samples ``idx`` (sorted) for the random, popularity (train clicks) and oracle
    rankers. The random scores are those of a draw for every sample, made in blocks (the same numbers)."""
    ids, mask = world.candidates[0][idx], world.candidates[1][idx]
    clicks = world.train_clicks.astype(np.float64)
    rng, n, C = np.random.default_rng(seed), len(world.samples), ids.shape[1]
    rand = np.empty(ids.shape)
    for a in range(0, n, 65536):
        block = rng.random((min(65536, n - a), C))
        lo, hi = np.searchsorted(idx, [a, a + 65536])
        rand[lo:hi] = block[idx[lo:hi] - a]
    out = {"random": rand, "popularity": np.where(mask, clicks[np.maximum(ids, 0)], 0.0)}
    probs = world.oracle_probs(idx)
    if probs is not None:
        out["oracle"] = probs
    return out


def split_user_stats(world: World, split_scores: np.ndarray, split: str = "test"):
    """Per-user metric statistics of scores given for the split's requests only ([n_split, C]); with the
    expected GAUC where the world has an oracle."""
    idx = world.indices(split)
    key = ("oracle_probs", split)
    if key not in world.derived:  # every stage's evaluation reads them: built once per world and split
        world.derived[key] = world.oracle_probs(idx)
    return user_stats(split_scores, world.labels[idx], world.candidates[1][idx], world.user_codes[idx],
                      probs=world.derived[key])


def split_metrics(world: World, scores: np.ndarray, split: str = "test", boot=None) -> dict:
    return summarize(split_user_stats(world, scores[world.indices(split)], split), boot)


def world_stats(world: World, headroom: bool = False, seed: int = 0) -> dict:
    idx = world.indices("test")
    boot = bootstrap_weights(len(np.unique(world.user_codes[idx])))
    refs = {name: summarize(split_user_stats(world, s, "test"), boot) for name, s in reference_scores(world, idx).items()}
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
