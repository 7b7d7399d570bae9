"""Does RG-SFT underfit or fail to generalise? Re-run it on a run's stored Best-of-N winners.

    python experiments/rg_sft_fit.py RUN_DIR --epochs 2,6

For each epoch count, fine-tunes the run's warm reasoner on round 1's winners (RUN/round1/candidates.json,
the run's own ``best_of_n.sft`` settings otherwise) and prints, per need group
(`rgalign diagnose`), how often the winners it was taught name the true need, and how often its greedy
query does on 12,000 of those same training requests and on the test split. Taught >> train means
underfitting (more epochs or capacity would help); train >> test means it does not generalise. Each
epoch count costs ~80 s per epoch plus ~30 s of generation on 2 cores; models go to a temp folder.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgalign_rl.align.diagnostics import need_groups  # noqa: E402
from rgalign_rl.diagnose import GROUPS  # noqa: E402

from rgalign_rl.align.best_of_n import select_winners, winner_pairs  # noqa: E402
from rgalign_rl.align.diagnostics import need_hits  # noqa: E402
from rgalign_rl.reasoner.queries import reasoner_queries  # noqa: E402
from rgalign_rl.reasoner.sft import SFTSettings, sft  # noqa: E402
from rgalign_rl.world import load_world  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--epochs", default="2,6", help="comma-separated RG-SFT epoch counts")
    ap.add_argument("--sample", type=int, default=12000, help="training requests whose greedy query is checked")
    args = ap.parse_args()
    run = Path(args.run)
    metrics = json.loads((run / "metrics.json").read_text())
    world_dir, run_sft = metrics["world"], SFTSettings(**metrics["config"]["best_of_n"]["sft"])
    world = load_world(world_dir)
    done = json.loads((run / "state.json").read_text())["done"]
    c = json.loads((run / "round1" / "candidates.json").read_text())
    idx, cands = np.array(c["indices"]), [[tuple(x) for x in cs] for cs in c["candidates"]]
    winners, _ = select_winners(cands, c["rewards"])
    pairs = winner_pairs(idx, cands, winners)
    taught_at = np.flatnonzero(np.array(winners) >= 0)  # requests with at least one candidate (ShopSim: all)
    pick = np.sort(np.random.default_rng(0).choice(taught_at, min(args.sample, len(taught_at)), replace=False))
    taught = need_hits(world, idx[pick], [cands[i][winners[i]][1] for i in pick])
    group = need_groups(world, idx[pick])
    test = world.indices("test")
    test_group = need_groups(world, test)
    rows = [("taught (winners)", taught, None)]
    with tempfile.TemporaryDirectory() as tmp:
        for epochs in (float(e) for e in args.epochs.split(",")):
            settings = dataclasses.replace(run_sft, epochs=epochs)
            path = sft(done["reasoner_warm"]["path"], world, pairs, Path(tmp) / f"e{epochs:g}", settings)
            train_ok = need_hits(world, idx[pick], reasoner_queries(world, path, idx[pick])[1])
            test_ok = need_hits(world, test, reasoner_queries(world, path, test)[1])
            rows.append((f"RG-SFT {epochs:g} epochs", train_ok, test_ok))
    print("\n| need accuracy | " + " | ".join(f"{g} train / test" for g in GROUPS) + " | all test |")
    print("|---|" + "---|" * (len(GROUPS) + 1))
    for name, tr, te in rows:
        cells = [f"{tr[group == g].mean():.1%} / " + ("-" if te is None else f"{te[test_group == g].mean():.1%}")
                 for g in GROUPS]
        print(f"| {name} | " + " | ".join(cells) + " | " + ("-" if te is None else f"{te.mean():.1%}") + " |")


if __name__ == "__main__":
    main()
