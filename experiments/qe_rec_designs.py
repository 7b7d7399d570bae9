"""QE-Rec designs against the two-tower on the same world, warm reasoner and queries (issue 18's ablation).

    python experiments/qe_rec_designs.py RUN [RUN ...]      # runs of `rgalign run ... --until qe_rec`

For each run (its world, two_tower stage and warm reasoner; queries as the run served them) it trains every
design below with the run's ranker settings and prints test GAUC minus the run's two-tower, with a paired
user-bootstrap CI, and the valid difference early stopping saw:

- ``paper``: the paper's three-tower QE-Rec (mutual attention) from scratch, last-token queries;
- ``paper nested``: the same nested in the trained two-tower (its towers frozen), both query parts;
- ``gated <mode>``: the gated design (ranker/model.py) nested, reading ``mode`` queries;
- ``gated both, not nested``: the gated design trained from scratch, towers included;
- ``gated both, no gate``: nested, the gate fixed open (1), so the query term is always fully trusted;
- ``two-tower + a*cos``: no training at all, the two-tower plus a times the cosine of the query's text
  vector with each candidate's text, a in {0.5, 1, 2} chosen on valid (a one-number late fusion).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgalign_rl.metrics import bootstrap_weights, paired_difference, user_stats  # noqa: E402
from rgalign_rl.ranker.model import GatedQERecRanker  # noqa: E402
from rgalign_rl.ranker.queries import query_text_dims  # noqa: E402
from rgalign_rl.ranker.train import RankerData, TrainConfig, load_ranker, score, train_ranker  # noqa: E402
from rgalign_rl.reasoner.queries import embed_queries, reasoner_queries  # noqa: E402
from rgalign_rl.text_encoder import encode_texts  # noqa: E402
from rgalign_rl.world import load_world  # noqa: E402

DESIGNS = [("paper", "qe_rec", "last_token", False), ("paper nested", "qe_rec", "both", True),
           ("gated last_token", "qe_rec_gated", "last_token", True), ("gated text", "qe_rec_gated", "text", True),
           ("gated both", "qe_rec_gated", "both", True), ("gated both, not nested", "qe_rec_gated", "both", False),
           ("gated both, no gate", "qe_rec_gated_open", "both", True)]


class OpenGate(GatedQERecRanker):
    """The gated design with its gate fixed open: every query fully trusted (the ablation of the gate)."""

    def forward(self, x, behavior, cand, query=None):
        with torch.no_grad():
            self.gate[-1].weight.zero_()
            self.gate[-1].bias.fill_(30.0)
        return super().forward(x, behavior, cand, query)


def main() -> None:
    torch.set_num_threads(2)
    from rgalign_rl.ranker import model as ranker_model

    ranker_model.ARCHS["qe_rec_gated_open"] = OpenGate
    rows = []
    for run in map(Path, sys.argv[1:]):
        metrics = json.loads((run / "metrics.json").read_text())
        cfg = metrics["config"]
        world = load_world(metrics["world"])
        warm = json.loads((run / "state.json").read_text())["done"]["reasoner_warm"]["path"]
        prompts, queries = reasoner_queries(world, warm, max_new_tokens=cfg["reasoner"]["max_new_tokens"])
        tt, enc, _ = load_ranker(run / "two_tower")
        every = np.arange(len(world.samples))
        base = score(tt, RankerData(world, enc), every)
        test, valid = world.indices("test"), world.indices("valid")
        boot = bootstrap_weights(len(np.unique(world.user_codes[test])))

        def stats(s, idx):
            return user_stats(s[idx], world.labels[idx], world.candidates[1][idx], world.user_codes[idx])

        def versus(s) -> tuple[dict, float]:
            d = paired_difference(stats(base, test), stats(s, test), boot)["gauc"]
            return d, stats(s, valid).value()["gauc"] - stats(base, valid).value()["gauc"]

        train = TrainConfig(**{k: v for k, v in cfg["ranker"]["train"].items()})
        for name, arch, mode, nest in DESIGNS:
            t0 = time.time()
            q = embed_queries(warm, prompts, queries, mode)
            kw = {"nest": tt, "encoder": enc} if nest else {}
            model, e, hist = train_ranker(world, arch, q, train, log=lambda *a: None,
                                          query_text=query_text_dims(mode), **kw)
            d, v = versus(score(model, RankerData(world, e, q), every))
            rows.append((run.name, name, d, v, len(hist), time.time() - t0))
            print(f"{run.name} {name}: {d['diff']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}] valid {v:+.4f}", flush=True)
        ids = np.maximum(world.candidates[0], 0)
        text_i = encode_texts([it["text"] for it in world.intents])
        cos = np.einsum("nd,ncd->nc", encode_texts(queries), text_i[ids])
        a = max((0.5, 1.0, 2.0), key=lambda a: stats(base + a * cos, valid).value()["gauc"])
        d, v = versus(base + a * cos)
        rows.append((run.name, f"two-tower + {a:g}*cos", d, v, 0, 0.0))
    print("\n| run | design | Δ test GAUC vs two-tower [paired CI] | Δ valid GAUC | epochs | s |")
    print("|---|---|---|---|---|---|")
    for run, name, d, v, n, t in rows:
        print(f"| {run} | {name} | {d['diff']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}] | {v:+.4f} | {n} | {t:.0f} |")


if __name__ == "__main__":
    main()
