"""How much ranking does a point of need accuracy buy through this loop's calibration? (issue 26's locator)

    python experiments/need_accuracy_curve.py RUN [--p 0,0.5,0.8,1.0] [--max-requests N]

For each p, every request's served query is the true need's text with probability p (seeded per request),
else the warm reasoner's own query; both are embedded by the warm snapshot, as QE-Rec reads them. The run's
QE-Rec is then calibrated on those queries exactly as the loop calibrates (its ``ranker`` settings: epochs, KL
weight on the new inputs, frozen towers, the same training requests), and test metrics are read with the same
mixture. p = 0 is the control. The curve says where a missing alignment gain is lost: if even p = 1 buys
little over p = 0, the ranker (its trust in queries, its calibration) is the bottleneck, not the reasoner.
Prints need accuracy, GAUC and expected GAUC per p, with paired CIs against p = 0.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgalign_rl.align.diagnostics import need_accuracy  # noqa: E402
from rgalign_rl.align.loop import sample_subset  # noqa: E402
from rgalign_rl.metrics import bootstrap_weights, paired_difference  # noqa: E402
from rgalign_rl.ranker.train import RankerData, TrainConfig, load_ranker, score, train_ranker  # noqa: E402
from rgalign_rl.reasoner.queries import embed_queries, reasoner_queries  # noqa: E402
from rgalign_rl.world import load_world  # noqa: E402
from rgalign_rl.world.stats import split_user_stats  # noqa: E402


class Calibration:
    """The run's QE-Rec, calibrated on given queries exactly as the loop calibrates (its ``ranker`` settings: epochs,
    KL weight on the new inputs, frozen towers, round 1's training requests); queries embedded by the warm snapshot,
    as QE-Rec reads them. ``rows``: the requests whose queries :meth:`test_stats` takes (subset, valid, test)."""

    def __init__(self, run: Path, max_requests: int | None = None):
        metrics = json.loads((run / "metrics.json").read_text())
        self.cfg, self.world = metrics["config"], load_world(metrics["world"])
        done = json.loads((run / "state.json").read_text())["done"]
        self.warm, rk = done["qe_rec"]["reasoner"], self.cfg["ranker"]
        self.prev, self.enc, self.meta = load_ranker(done["qe_rec"]["path"])
        self.snapshot, self.mode = self.meta["queries"].split(":", 1)[1], self.meta["query_mode"]
        n = max_requests or rk.get("calib_max_requests")
        self.subset = sample_subset(self.world.indices("train"), n, self.cfg["seed"] + 1)  # round 1's draw
        self.test = self.world.indices("test")
        self.rows = np.concatenate([self.subset, self.world.indices("valid"), self.test])
        self.train = TrainConfig(**{**rk["train"], "epochs": rk["calib_epochs"], "kl_weight": rk["calib_kl_weight"]})
        self.boot = bootstrap_weights(len(np.unique(self.world.user_codes[self.test])))

    def warm_queries(self) -> tuple[list[str], list[str]]:
        """(prompts, the warm reasoner's queries) of ``rows``."""
        return reasoner_queries(self.world, self.warm, self.rows, max_new_tokens=self.cfg["reasoner"]["max_new_tokens"])

    def test_stats(self, prompts: list[str], queries: list[str]):
        """Test stats (split_user_stats) of the run's QE-Rec calibrated on ``queries`` (aligned with ``rows``)."""
        w, prev = self.world, self.prev
        emb = np.zeros((len(w.samples), prev.cfg.query_dim), np.float32)
        emb[self.rows] = embed_queries(self.snapshot, prompts, queries, self.mode)
        cal = dataclasses.replace(self.train, seed=self.cfg["seed"] + 1)
        model, _, _ = train_ranker(w, prev.cfg.arch, emb, cal, reference=prev, ref_query=emb, init=prev,
                                   encoder=self.enc, log=lambda *x: None, train_indices=self.subset,
                                   query_text=prev.cfg.query_text, frozen_towers=bool(self.meta.get("nested_in")))
        return split_user_stats(w, score(model, RankerData(w, self.enc, emb), self.test))

    def cells(self, base, stats) -> dict[str, str]:
        """Paired differences stats - base with their 95% CIs, formatted, per metric."""
        d = paired_difference(base, stats, self.boot)
        return {k: f"{d[k]['diff']:+.4f} [{d[k]['ci'][0]:+.4f}, {d[k]['ci'][1]:+.4f}]" for k in d}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--p", default="0,0.5,0.8,1.0", help="shares of requests served the true need's text")
    ap.add_argument("--max-requests", type=int, help="training requests (default: the run's calib_max_requests)")
    a = ap.parse_args()
    torch.set_num_threads(2)
    cal = Calibration(Path(a.run), a.max_requests)
    world, rows, test = cal.world, cal.rows, cal.test
    prompts, served = cal.warm_queries()
    needs = ["; ".join(world.oracle.needs_of(int(i))) for i in rows]
    draw = np.random.default_rng(12345).random(len(world.samples))[rows]  # one draw per request, shared by every p
    base = None
    print("| p | need accuracy (test) | GAUC | expected GAUC | Δ GAUC vs p=0 [paired CI] | Δ expected GAUC vs p=0 |")
    print("|---|---|---|---|---|---|")
    for p in (float(x) for x in a.p.split(",")):
        queries = [nd if d < p and nd else q for q, nd, d in zip(served, needs, draw)]
        stats = cal.test_stats(prompts, queries)
        acc = need_accuracy(world, test, queries[-len(test):])["overall"]
        v = stats.value()
        if base is None:
            base = stats
        c = cal.cells(base, stats)
        print(f"| {p:.2f} | {100 * acc:.1f}% | {v['gauc']:.4f} | {v.get('expected_gauc', float('nan')):.4f} | "
              f"{c['gauc']} | {c.get('expected_gauc', '-')} |", flush=True)


if __name__ == "__main__":
    main()
