"""What an evaluation pays for the frozen reward: building a FrozenRankerScorer and reading its targets.

    python bench/scorer_build.py RUN_DIR [--rows 3000] [--repeats 3]

RUN_DIR is a finished `rgalign run` (its world and qe_rec ranker are read). Two ways, timed in one
process, median of ``repeats`` each, alternating:
- ``all``: every request's target, as the scorer computed them before targets became lazy (the k nearest
  training requests of all ~55k requests of a default world);
- ``rows``: the targets of ``--rows`` valid requests only, which is all an evaluation's valid reward reads.
Both build a fresh scorer (user embeddings, the teacher-text neighbour space); the MiniLM vectors of the
teacher texts are warmed once before timing, as they are after a run's first scorer. It checks that the
rows' targets are bit-identical to the same rows of the full table.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgalign_rl.scoring import FrozenRankerScorer, ScorerConfig  # noqa: E402
from rgalign_rl.world import load_world  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(2)
    run = Path(a.run)
    state = json.loads((run / "state.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    cfg = metrics["config"]["reward"]["scorer"]
    world = load_world(metrics["world"])
    ranker = state["done"]["qe_rec"]["path"]
    scfg = ScorerConfig(**cfg)
    rows = np.sort(np.random.default_rng(0).choice(world.indices("valid"), a.rows, replace=False))
    FrozenRankerScorer(world, ranker, scfg)._teacher_queries  # warms the MiniLM vectors of the teacher texts

    times: dict[str, list[float]] = {"all": [], "rows": []}
    full = part = None
    for _ in range(a.repeats):
        t = time.perf_counter()
        full = FrozenRankerScorer(world, ranker, scfg).targets
        times["all"].append(time.perf_counter() - t)
        t = time.perf_counter()
        part = FrozenRankerScorer(world, ranker, scfg).target(rows)
        times["rows"].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"world {world.root}: {len(world.samples)} requests, {len(world.indices('train'))} training; "
          f"neighbours {scfg.neighbours} in {scfg.neighbour_space}")
    for k, v in times.items():
        print(f"{k:>5}: median {med[k]:.2f} s of {', '.join(f'{x:.2f}' for x in v)}")
    print(f"rows / all: {med['rows'] / med['all']:.2f}x the time; "
          f"targets identical: {torch.equal(full[torch.as_tensor(rows)], part)}")


if __name__ == "__main__":
    main()
