"""What is the aligned reasoner worth to a ranker trained the way QE-Rec was?

    python experiments/retrain_ranker.py RUN_DIR [RUN_DIR ...] [--check-warm]

The loop's calibration fine-tunes the previous QE-Rec (a few epochs, KL to it) on the aligned reasoner's
embeddings, although that ranker learned another embedding space (the warm snapshot's). This trains a QE-Rec
from scratch on the final reasoner's queries with the run's own ``ranker.train`` settings (the qe_rec
stage's recipe) and prints its best valid GAUC and its test metrics beside QE-Rec's and the final's, with
paired user-bootstrap differences. ``--check-warm`` also retrains on the warm reasoner, which must give
QE-Rec back (the recipe is deterministic on this machine). ~2-3 min per ranker on 2 cores; the reasoners'
generations come from the cache when the run made them.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgalign_rl.align.evaluate import scores_file  # noqa: E402
from rgalign_rl.metrics import bootstrap_weights, paired_difference  # noqa: E402
from rgalign_rl.ranker.queries import query_embeddings  # noqa: E402
from rgalign_rl.ranker.train import RankerData, TrainConfig, load_ranker, score, train_ranker  # noqa: E402
from rgalign_rl.world import load_world  # noqa: E402
from rgalign_rl.world.stats import split_user_stats  # noqa: E402


def retrained_scores(world, reasoner: str, mode: str, train: dict) -> tuple[np.ndarray, float]:
    """Test scores and best valid GAUC of a QE-Rec trained from scratch on ``reasoner``'s queries."""
    query = query_embeddings(world, f"reasoner:{reasoner}", mode)
    model, enc, hist = train_ranker(world, "qe_rec", query, TrainConfig(**train), log=lambda *a: None)
    scores = score(model, RankerData(world, enc, query), world.indices("test"))
    return scores, max(h["valid_gauc"] for h in hist)


def best_valid(ranker_dir: str) -> float:
    return max(h["valid_gauc"] for h in load_ranker(ranker_dir)[2]["history"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--check-warm", action="store_true", help="also retrain on the warm reasoner (must equal QE-Rec)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    print("| run | ranker | valid GAUC (best epoch) | test GAUC | Recall@3 | - QE-Rec GAUC [paired CI] | - QE-Rec R@3 [paired CI] |")
    print("|---|---|---|---|---|---|---|")
    for run in map(Path, args.runs):
        metrics = json.loads((run / "metrics.json").read_text())
        cfg, world = metrics["config"], load_world(metrics["world"])
        done = json.loads((run / "state.json").read_text())["done"]
        boot = bootstrap_weights(len(np.unique(world.user_codes[world.indices("test")])))
        qe_rec = np.load(scores_file(run, "qe_rec"))
        base = split_user_stats(world, qe_rec)
        final_key = f"round{cfg['rounds']}/calibrate"
        rows = [("qe_rec", best_valid(done["qe_rec"]["path"]), qe_rec),
                ("final (calibrated)", best_valid(done[final_key]["path"]),
                 np.load(scores_file(run, final_key)))]
        jobs = [("final reasoner, retrained", done[final_key]["reasoner"])]
        if args.check_warm:
            jobs.append(("warm reasoner, retrained", done["reasoner_warm"]["path"]))
        for name, reasoner in jobs:
            scores, valid = retrained_scores(world, reasoner, cfg["ranker"]["query_mode"], cfg["ranker"]["train"])
            rows.append((name, valid, scores))
        for name, valid, scores in rows:
            stats = split_user_stats(world, scores)
            value, d = stats.value(), paired_difference(base, stats, boot)
            cells = [f"{d[k]['diff']:+.4f} [{d[k]['ci'][0]:+.4f}, {d[k]['ci'][1]:+.4f}]" for k in ("gauc", "recall@3")]
            print(f"| {run} | {name} | {valid:.4f} | {value['gauc']:.4f} | {value['recall@3']:.4f} | "
                  + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
