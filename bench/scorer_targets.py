"""The reward's denoised targets at scale: the k nearest training requests of many requests, and their recall.

    python bench/scorer_targets.py WORLD RANKER [--rows 100000] [--index auto] [--recall-rows 1000]

Times, in one process on the threads OMP_NUM_THREADS gives: loading the world and the ranker, the targets of
``--rows`` requests drawn at random from the whole world (the neighbour index built on first use: the user
tower over every training request, the teacher texts, and for ``ivf`` the faiss index), and peak RSS. Then the
index's recall@k against exact search on ``--recall-rows`` of those requests (the exact search streams the
training split's vectors in blocks; not timed with the targets). ``--rows 0``: every request.
Prints one JSON line.

    python bench/scorer_targets.py WORLD RANKER --train 200000

makes the ranker first, and exits: a two-tower trained for one epoch on 200k training requests (its feature
encoder fitted on the whole training split), for a size where a full epoch takes ~45 min. Timing does not
depend on how well it ranks; the recall is that of its space.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgalign_rl.ranker.features import FeatureEncoder  # noqa: E402
from rgalign_rl.ranker.train import TrainConfig, save_ranker, train_ranker  # noqa: E402
from rgalign_rl.scoring import FrozenRankerScorer, ScorerConfig  # noqa: E402
from rgalign_rl.world import load_world  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("world")
    ap.add_argument("ranker")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--index", default="auto", help="reward.scorer.neighbour_index: auto | exact | ivf")
    ap.add_argument("--probe", type=int, default=ScorerConfig.neighbour_probe)
    ap.add_argument("--recall-rows", type=int, default=1000)
    ap.add_argument("--train", type=int, default=0, metavar="N", help="make RANKER first (see above) and exit")
    a = ap.parse_args()
    if a.train:
        return make_ranker(a.world, a.ranker, a.train)
    t0 = time.perf_counter()
    world = load_world(a.world)
    world.oracle = None  # the targets never read it
    cfg = ScorerConfig(neighbour_index=a.index, neighbour_probe=a.probe)
    scorer = FrozenRankerScorer(world, a.ranker, cfg)
    t_load = time.perf_counter() - t0
    n = len(world.samples)
    rng = np.random.default_rng(0)
    rows = np.arange(n) if a.rows <= 0 or a.rows >= n else np.sort(rng.choice(n, a.rows, replace=False))
    t = time.perf_counter()
    targets = scorer.target(rows)
    t_targets = time.perf_counter() - t
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    sample = np.sort(rng.choice(rows, min(a.recall_rows, len(rows)), replace=False))
    t = time.perf_counter()
    recall = scorer.neighbour_recall(sample) if a.recall_rows > 0 else None
    print(json.dumps({
        "requests": n, "training": len(world.indices("train")), "rows": len(rows), "index": scorer._index.kind,
        "probe": a.probe, "neighbours": cfg.neighbours, "space": cfg.neighbour_space,
        "load_s": round(t_load, 1), "targets_s": round(t_targets, 1), "peak_rss_gb": round(peak_gb, 2),
        f"recall@{cfg.neighbours}": None if recall is None else round(recall, 4), "recall_rows": len(sample),
        "recall_s": round(time.perf_counter() - t, 1), "targets_sum_ok": bool(torch.all(targets.sum(1) <= 1 + 1e-5)),
        "threads": torch.get_num_threads()}))


def make_ranker(world_dir: str, out: str, n: int) -> None:
    world = load_world(world_dir)
    world.oracle = None
    rng = np.random.default_rng(0)
    train = world.indices("train")
    encoder = FeatureEncoder.fit(world.samples, train)
    model, encoder, history = train_ranker(
        world, "two_tower", None, TrainConfig(epochs=1), encoder=encoder,
        train_indices=np.sort(rng.choice(train, min(n, len(train)), replace=False)),
        stop_indices=np.sort(rng.choice(world.indices("valid"), min(20_000, len(world.indices("valid"))), replace=False)))
    save_ranker(out, model, encoder, {"queries": "none", "history": history, "world": world_dir,
                                      "note": f"bench/scorer_targets.py --train {n}"})


if __name__ == "__main__":
    main()
