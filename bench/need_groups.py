"""Where a run's ranking gains and losses sit: test requests grouped by their true need.

    python bench/need_groups.py RUN_DIR

Groups (ShopSim worlds: world.json lists the cold intents): ``cold`` (the need's intent launched late),
then warm needs by how many training requests carry them: ``rare`` (< 200), ``mid`` (200-999),
``frequent`` (>= 1000). For every stage kept in RUN_DIR/scores it prints the request AUC per group (the
mean over clicked requests of the AUC of that request's candidates: a per-request view, unlike the
user-weighted GAUC) and, for reasoner stages, the share of the stage's greedy test queries whose nearest
need text is the true one (the cached generations of the stage's reasoner; stages without a reasoner
snapshot print '-').
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgalign_rl.align.diagnostics import need_hits  # noqa: E402
from rgalign_rl.metrics import group_auc  # noqa: E402
from rgalign_rl.reasoner.queries import reasoner_queries  # noqa: E402
from rgalign_rl.world import load_world  # noqa: E402

GROUPS = ("cold", "rare", "mid", "frequent")
REASONERS = {"qe_rec": "reasoner_warm", "round1_rg_sft": "round1/rg_sft", "round1_dpo": "round1/dpo",
             "round1_ppo": "round1/ppo", "round1_grpo": "round1/grpo", "round1_rloo": "round1/rloo",
             "round1_rg_cl": "round1/rg_cl", "round1_calibrate": "round1/rg_cl"}


def request_auc(scores: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[n] AUC of each request's candidates (ties half: metrics.group_auc with one group per request);
    NaN where all labels are equal."""
    rows = np.nonzero(mask)[0]
    auc, weight = group_auc(rows, scores[mask], labels[mask], n_users=len(scores))
    return np.where(weight > 0, auc, np.nan)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    run = Path(ap.parse_args().run)
    metrics = json.loads((run / "metrics.json").read_text())
    world = load_world(metrics["world"])
    cold = set(json.loads((Path(metrics["world"]) / "world.json").read_text()).get("cold_intents", []))
    need = np.array([world.oracle[s["sample_id"]]["need_intent"] for s in world.samples])
    train_count = collections.Counter(need[world.indices("train")])
    test = world.indices("test")
    count = np.array([train_count[n] for n in need[test]])
    group = np.where(np.isin(need[test], list(cold)), "cold",
                     np.where(count < 200, "rare", np.where(count < 1000, "mid", "frequent")))
    print("| stage | " + " | ".join(f"{g} (n={int((group == g).sum())}) AUC / need acc." for g in GROUPS) + " |")
    print("|---|" + "---|" * len(GROUPS))
    for path in sorted((run / "scores").glob("*.npy"), key=lambda p: p.stat().st_mtime):
        auc = request_auc(np.load(path), world.labels[test], world.candidates[1][test])
        ok = None
        stage = REASONERS.get(path.stem)
        folder = run / stage if stage else None
        if folder is not None and (folder / "config.json").exists():
            ok = need_hits(world, test, reasoner_queries(world, folder, test)[1])
        cells = [f"{np.nanmean(auc[group == g]):.4f} / " + (f"{ok[group == g].mean():.1%}" if ok is not None else "-")
                 for g in GROUPS]
        print(f"| {path.stem} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
