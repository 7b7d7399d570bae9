"""Where do the aligned reasoner's newly named needs land? Test requests grouped by the two-tower's rank of the
true need's intent among the request's candidates (issue 26, session 19).

    python experiments/need_room.py RUN        # a finished `rgalign run` (its generation cache is reused)

For RG-SFT's and DPO's reasoners: each group's share of the test requests, need accuracy (the query's nearest need
phrase is the true one, as the report counts it) of the warm reasoner -> the stage's, and how many requests the
stage newly named / stopped naming. A query can only move the ranking where the two-tower does not already rank
the need first.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgalign_rl.align.diagnostics import need_hits, need_ranks  # noqa: E402
from rgalign_rl.align.evaluate import scores_file  # noqa: E402
from rgalign_rl.reasoner.queries import reasoner_queries  # noqa: E402
from rgalign_rl.world import load_world  # noqa: E402


def main() -> None:
    torch.set_num_threads(2)
    run = Path(sys.argv[1])
    world = load_world(json.loads((run / "metrics.json").read_text())["world"])
    if not world.has_needs:
        raise SystemExit(f"{run}: its world's oracle names no needs (ShopSim's does): nothing to group by")
    done = json.loads((run / "state.json").read_text())["done"]
    test = world.indices("test")
    rank = need_ranks(world, test, np.load(scores_file(run, "two_tower")))  # the two-tower's kept test scores
    groups = [("ranked 1st by the two-tower", rank == 1), ("ranked 2nd-3rd", (rank > 1) & (rank <= 3)),
              ("ranked 4th or lower", rank > 3), ("not a candidate", rank == 0)]
    warm = need_hits(world, test, reasoner_queries(world, done["reasoner_warm"]["path"], test)[1])
    print("| stage | the true need's intent | test share | need accuracy warm -> stage | newly named | stopped naming |")
    print("|---|---|---|---|---|---|")
    for stage in ("round1/rg_sft", "round1/dpo"):
        if stage not in done:
            continue
        hit = need_hits(world, test, reasoner_queries(world, done[stage]["path"], test)[1])
        for name, g in groups:
            print(f"| {stage} | {name} | {g.mean():.3f} | {warm[g].mean():.3f} -> {hit[g].mean():.3f} | "
                  f"{np.sum(hit & ~warm & g)} | {np.sum(~hit & warm & g)} |")


if __name__ == "__main__":
    main()
