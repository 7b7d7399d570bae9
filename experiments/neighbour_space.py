"""Where the reward's denoising neighbours are found, and the Best-of-N winners it then picks.

    python experiments/neighbour_space.py RUN_DIR --spaces user,user+teachers

Scores round 1's stored Best-of-N candidates again with the run's frozen QE-Rec and reward, its k nearest
training requests found in each ``reward.scorer.neighbour_space``, and prints per need group the share of
those neighbours that carry the request's own need and how often the reward's winner names the true need
(the session-6 experiment behind the ``user+teachers`` default). ``rgalign diagnose RUN`` gives the run's
own winners' table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgalign_rl.align.best_of_n import score_candidates  # noqa: E402
from rgalign_rl.align.diagnostics import need_groups, need_hits, need_intents  # noqa: E402
from rgalign_rl.diagnose import GROUPS  # noqa: E402
from rgalign_rl.reasoner.model import load_tokenizer  # noqa: E402
from rgalign_rl.reasoner.prompt import build_prompts  # noqa: E402
from rgalign_rl.scoring import FrozenRankerScorer, ScorerConfig  # noqa: E402
from rgalign_rl.world import load_world  # noqa: E402
from reward import build_reward  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--spaces", default="user,user+teachers")
    args = ap.parse_args()
    run = Path(args.run)
    metrics = json.loads((run / "metrics.json").read_text())
    world, cfg = load_world(metrics["world"]), metrics["config"]["reward"]
    done = json.loads((run / "state.json").read_text())["done"]
    c = json.loads((run / "round1" / "candidates.json").read_text())
    idx, cands = np.array(c["indices"]), [[tuple(x) for x in cs] for cs in c["candidates"]]
    group, need = need_groups(world, idx), need_intents(world)
    right = need_hits(world, np.repeat(idx, [len(cs) for cs in cands]), [t for cs in cands for _, t in cs])
    right = np.split(right, np.cumsum([len(cs) for cs in cands])[:-1])
    prompts = build_prompts(world, idx, load_tokenizer(done["reasoner_warm"]["path"]))
    print("| need group (train requests) | " + " | ".join(f"same need among neighbours, `{s}` | winner right, `{s}`"
                                                         for s in args.spaces.split(",")) + " |")
    print("|---|" + "---|---|" * len(args.spaces.split(",")))
    cols = {}
    for space in args.spaces.split(","):
        scorer = FrozenRankerScorer(world, done["qe_rec"]["path"], ScorerConfig(**{**cfg["scorer"], "neighbour_space": space}))
        same = (need[scorer.nearest_training(scorer.cfg.neighbours)[idx]] == need[idx, None]).mean(1)
        rewards = score_candidates(build_reward({"name": cfg["name"], "k": cfg["k"]}, scorer), world, idx, prompts, cands)
        won = np.array([right[r][int(np.argmax(rewards[r]))] for r in range(len(idx))])
        cols[space] = {g: (same[group == g].mean(), won[group == g].mean()) for g in GROUPS}
    for g in GROUPS:
        print(f"| {g} (n={int((group == g).sum())}) | "
              + " | ".join(f"{cols[s][g][0]:.1%} | {cols[s][g][1]:.1%}" for s in cols) + " |")


if __name__ == "__main__":
    main()
