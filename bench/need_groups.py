"""Where a run's ranking gains and losses sit: test requests grouped by their true need.

    python bench/need_groups.py RUN_DIR

Groups (ShopSim worlds: world.json lists the cold intents): ``cold`` (the need's intent launched late),
then warm needs by how many training requests carry them: ``rare`` (< 200), ``mid`` (200-999),
``frequent`` (>= 1000). For every stage kept in RUN_DIR/scores it prints the request AUC per group (the
mean over clicked requests of the AUC of that request's candidates: a per-request view, unlike the
user-weighted GAUC) and, for reasoner stages, the share of the stage's greedy test queries whose nearest
need text is the true one (the cached generations of the stage's reasoner; stages without a reasoner
snapshot print '-'). ``--winners`` adds round 1's Best-of-N candidates per group: how often each
source's candidates, the reward's winner and any candidate name the true need (training requests).
``--rescore SPACE[,SPACE]`` scores those same candidates again with the run's frozen QE-Rec and reward,
its denoising neighbours chosen in each given space (``reward.scorer.neighbour_space``), and prints the
winners' table for each.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgalign_rl.align.diagnostics import NEED_GROUPS, need_groups, need_hits, need_intents  # noqa: E402
from rgalign_rl.metrics import group_auc  # noqa: E402
from rgalign_rl.reasoner.queries import reasoner_queries  # noqa: E402
from rgalign_rl.world import load_world  # noqa: E402

GROUPS = NEED_GROUPS


def snapshot(done: dict, key: str) -> Path | None:
    """The reasoner snapshot behind a scores/<key>.npy (from state.json, so reused stages resolve too):
    a stage's ``reasoner`` (rankers: QE-Rec, control, calibration), else its ``path`` if that is a causal LM."""
    entry = done.get(key.replace("_", "/", 1) if key.startswith("round") else key, {})
    for field in ("reasoner", "path"):
        if entry.get(field) and (Path(entry[field]) / "tokenizer_config.json").exists():  # a causal LM, not a ranker
            return Path(entry[field])
    return None


def request_auc(scores: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[n] AUC of each request's candidates (ties half: metrics.group_auc with one group per request);
    NaN where all labels are equal."""
    rows = np.nonzero(mask)[0]
    auc, weight = group_auc(rows, scores[mask], labels[mask], n_users=len(scores))
    return np.where(weight > 0, auc, np.nan)


def rescore(run: Path, world, idx: np.ndarray, cands: list, space: str) -> list[list[float]]:
    """The candidates' rewards from the run's frozen QE-Rec and reward, neighbours found in ``space``."""
    from rgalign_rl.align.best_of_n import score_candidates
    from rgalign_rl.reasoner.model import load_tokenizer
    from rgalign_rl.reasoner.prompt import build_prompts
    from rgalign_rl.scoring import FrozenRankerScorer, ScorerConfig
    from reward import build_reward

    cfg = json.loads((run / "metrics.json").read_text())["config"]["reward"]
    done = json.loads((run / "state.json").read_text())["done"]
    scorer_cfg = ScorerConfig(**{**cfg["scorer"], "neighbour_space": space})
    scorer = FrozenRankerScorer(world, done["qe_rec"]["path"], scorer_cfg)
    reward_fn = build_reward({"name": cfg["name"], "k": cfg["k"]}, scorer)
    need = need_intents(world)
    same = (need[scorer.nearest_training(scorer.cfg.neighbours)[idx]] == need[idx, None]).mean(1)
    group = need_groups(world, idx)
    print(f"\nneighbour_space={space}: share of the {scorer.cfg.neighbours} nearest training requests with the "
          "request's need: " + ", ".join(f"{g} {same[group == g].mean():.1%}" for g in GROUPS))
    prompts = build_prompts(world, idx, load_tokenizer(done["reasoner_warm"]["path"]))
    return score_candidates(reward_fn, world, idx, prompts, [[tuple(c) for c in cs] for cs in cands])


def winners(run: Path, world, spaces: list[str]) -> None:
    """Round 1's Best-of-N candidates (training requests) per need group: the need accuracy of each
    source's candidates, of the reward's winner, and the share of requests with any right candidate."""
    c = json.loads((run / "round1" / "candidates.json").read_text())
    idx, cands = np.array(c["indices"]), c["candidates"]
    for space in spaces or [None]:
        rewards = c["rewards"] if space is None else rescore(run, world, idx, cands, space)
        if space is not None:
            print(f"\nrescored, reward.scorer.neighbour_space={space}:")
        winner_table(world, idx, cands, rewards)


def winner_table(world, idx: np.ndarray, cands: list, rewards: list) -> None:
    texts = [t for cs in cands for _, t in cs]
    right = need_hits(world, np.repeat(idx, [len(cs) for cs in cands]), texts)
    right = np.split(right, np.cumsum([len(cs) for cs in cands])[:-1])
    group = need_groups(world, idx)
    sources = sorted({s for cs in cands for s, _ in cs})
    print("\n| RG-SFT candidates: need group (train requests) | " + " | ".join(sources)
          + " | reward's winner | any candidate right |")
    print("|---|" + "---|" * (len(sources) + 2))
    for g in GROUPS:
        rows = np.nonzero(group == g)[0]
        per_source = []
        for src in sources:
            hits = [right[r][k] for r in rows for k, (s, _) in enumerate(cands[r]) if s == src]
            per_source.append(f"{np.mean(hits):.1%}" if hits else "-")
        won = np.mean([right[r][int(np.argmax(rewards[r]))] for r in rows])
        print(f"| {g} (n={len(rows)}) | " + " | ".join(per_source)
              + f" | {won:.1%} | {np.mean([right[r].any() for r in rows]):.1%} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--winners", action="store_true", help="also the RG-SFT candidates' need accuracy per group")
    ap.add_argument("--rescore", default="", help="with --winners: neighbour spaces to score the candidates again in")
    args = ap.parse_args()
    run = Path(args.run)
    metrics = json.loads((run / "metrics.json").read_text())
    world = load_world(metrics["world"])
    done = json.loads((run / "state.json").read_text())["done"]
    test = world.indices("test")
    group = need_groups(world, test)
    print("| stage | " + " | ".join(f"{g} (n={int((group == g).sum())}) AUC / need acc." for g in GROUPS) + " |")
    print("|---|" + "---|" * len(GROUPS))
    for path in sorted((run / "scores").glob("*.npy"), key=lambda p: p.stat().st_mtime):
        auc = request_auc(np.load(path), world.labels[test], world.candidates[1][test])
        ok = None
        folder = snapshot(done, path.stem)
        if folder is not None:
            ok = need_hits(world, test, reasoner_queries(world, folder, test)[1])
        cells = [f"{np.nanmean(auc[group == g]):.4f} / " + (f"{ok[group == g].mean():.1%}" if ok is not None else "-")
                 for g in GROUPS]
        print(f"| {path.stem} | " + " | ".join(cells) + " |")
    if args.winners:
        winners(run, world, [x for x in args.rescore.split(",") if x])


if __name__ == "__main__":
    main()
