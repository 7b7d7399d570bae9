"""Does QE-Rec read a query as "this names intent X"? The gated QE-Rec's query projection trained (the default)
vs kept at its start (identity on the query's MiniLM vector, zero on the last-token state), issue 26, session 19.

    python experiments/query_reading.py RUN     # a finished `rgalign run` with query_mode both (the default)

For each design: a nested gated QE-Rec trained on the warm reasoner's queries exactly as the loop's QE-Rec stage
trains it (the run's settings), then read *frozen* with three sets of test queries: the warm reasoner's, DPO's
(the aligned reasoner's; RG-SFT's in a run stopped after it) and the canonical text of each request's true need
(a perfect reasoner). Printed: QE-Rec - two-tower, DPO - warm and canonical - warm (test GAUC, paired
user-bootstrap CIs), the learned match scale, and how often the query's projection is nearest (cosine over every
intent's text) to the true need's intent.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgalign_rl.align.diagnostics import need_positions  # noqa: E402
from rgalign_rl.metrics import bootstrap_weights, paired_difference, user_stats  # noqa: E402
from rgalign_rl.ranker.model import GatedQERecRanker  # noqa: E402
from rgalign_rl.ranker.queries import query_text_dims  # noqa: E402
from rgalign_rl.ranker.train import RankerData, TrainConfig, load_ranker, score, train_ranker  # noqa: E402
from rgalign_rl.reasoner.queries import embed_queries, reasoner_queries  # noqa: E402
from rgalign_rl.world import load_world  # noqa: E402


class KeptProjection(GatedQERecRanker):
    """The gated QE-Rec with ``query_to_text`` held at its start: the match term is the cosine of the query's
    MiniLM vector with each candidate's text, as MiniLM reads it (its gradient is zeroed, so train_ranker's
    requires_grad switch cannot undo it)."""

    def __init__(self, cfg, text_emb):
        super().__init__(cfg, text_emb)
        self.query_to_text.weight.register_hook(torch.zeros_like)


def main() -> None:
    torch.set_num_threads(2)
    from rgalign_rl.ranker import model as ranker_model

    ranker_model.ARCHS["qe_rec_kept_projection"] = KeptProjection
    run = Path(sys.argv[1])
    metrics = json.loads((run / "metrics.json").read_text())
    cfg, world = metrics["config"], load_world(metrics["world"])
    done = json.loads((run / "state.json").read_text())["done"]
    warm, mode = done["reasoner_warm"]["path"], "both"
    every, test = np.arange(len(world.samples)), world.indices("test")
    prompts, warm_q = reasoner_queries(world, warm)
    queries = {"warm": embed_queries(warm, prompts, warm_q, mode)}
    aligned = next(k for k in ("round1/dpo", "round1/rg_sft") if k in done)  # a run stopped after RG-SFT: RG-SFT's
    print(f"aligned queries: {aligned}'s reasoner")
    _, dpo_q = reasoner_queries(world, done[aligned]["path"], test)  # embedded by the warm snapshot, as served
    queries["dpo"] = queries["warm"].copy()
    queries["dpo"][test] = embed_queries(warm, [prompts[i] for i in test], dpo_q, mode)
    needs = [(world.oracle.needs_of(i) or [""])[0] for i in every]
    queries["canonical"] = embed_queries(warm, prompts, needs, mode)
    tt, enc, _ = load_ranker(run / "two_tower")
    base = score(tt, RankerData(world, enc), every)
    boot = bootstrap_weights(len(np.unique(world.user_codes[test])))
    need = need_positions(world, test)

    def stats(s):
        return user_stats(s[test], world.labels[test], world.candidates[1][test], world.user_codes[test])

    def versus(a, b) -> str:
        d = paired_difference(stats(a), stats(b), boot)["gauc"]
        return f"{d['diff']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]"

    print("| QE-Rec's query projection | QE-Rec - two-tower | frozen: DPO - warm | frozen: canonical - warm | scale "
          "| nearest intent = need: warm / DPO / canonical | s |")
    print("|---|---|---|---|---|---|---|")
    for name, arch in (("trained (default)", "qe_rec_gated"), ("kept at its start", "qe_rec_kept_projection")):
        t0 = time.time()
        model, e, _ = train_ranker(world, arch, queries["warm"], TrainConfig(**cfg["ranker"]["train"]),
                                   log=lambda *a: None, query_text=query_text_dims(mode), nest=tt, encoder=enc)
        s = {k: score(model, RankerData(world, e, q), every) for k, q in queries.items()}
        with torch.no_grad():
            read = [float(np.mean((F.normalize(model.query_to_text(torch.from_numpy(q[test])), dim=-1)
                                   @ model.text_emb.T).argmax(1).numpy() == need)) for q in queries.values()]
        print(f"| {name} | {versus(base, s['warm'])} | {versus(s['warm'], s['dpo'])} | "
              f"{versus(s['warm'], s['canonical'])} | {model.match_scale.item():.2f} | "
              f"{' / '.join(f'{r:.3f}' for r in read)} | {time.time() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
