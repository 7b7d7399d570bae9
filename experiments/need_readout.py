"""What each reasoner's knowledge of the need is worth to a ranker that reads needs perfectly.

    python experiments/need_readout.py RUN_DIR [--seed S]

Trains the headroom pair once on RUN_DIR's world (ranker/headroom.py: a two-tower, and QE-Rec in text
mode on the true need's text), then gives that QE-Rec the valid and test queries of each reasoner snapshot
in RUN_DIR/state.json (the warm reasoner, then each round's RG-SFT, aligner and RG-CL models; the last
RG-CL model is the one the final stage serves) instead of the true need: the query text itself, and the
need phrase nearest to it (the rule need accuracy uses). Two readings per row:

- trusting: the reader alone, which believes whatever need it is given;
- fused: two-tower score + alpha * reader score, alpha (one scalar of trust) chosen on the run's valid
  requests.

Each is compared with the two-tower and with the warm reasoner's row of the same form (paired user
bootstrap on the test split); the run's own QE-Rec, final and control are listed against the same
two-tower for scale. A row shows what a stage's knowledge of the need is worth to a ranker that reads
needs perfectly: if the aligned reasoner's fused row does not beat the warm one's, no reader of this kind
could turn alignment's semantic gain into ranking in this world.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgalign_rl.align.diagnostics import nearest_needs, true_need_named  # noqa: E402
from rgalign_rl.align.evaluate import scores_file  # noqa: E402
from rgalign_rl.align.loop import sample_subset  # noqa: E402
from rgalign_rl.metrics import bootstrap_weights, paired_difference, summarize, user_stats  # noqa: E402
from rgalign_rl.ranker.headroom import headroom_rankers  # noqa: E402
from rgalign_rl.ranker.train import score  # noqa: E402
from rgalign_rl.reasoner.queries import reasoner_queries  # noqa: E402
from rgalign_rl.text_encoder import encode_texts  # noqa: E402
from rgalign_rl.world import load_world  # noqa: E402

ALPHAS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--seed", type=int, default=None, help="ranker seed (default: the run's)")
    args = ap.parse_args()
    run = Path(args.run)
    metrics = json.loads((run / "metrics.json").read_text())
    seed = metrics["config"].get("seed", 0) if args.seed is None else args.seed
    torch.set_num_threads(2)
    world = load_world(metrics["world"])
    valid = sample_subset(world.indices("valid"), metrics["config"]["eval"]["max_valid"], seed)  # the run's
    test = world.indices("test")
    idx, nv = np.concatenate([valid, test]), len(valid)
    boot = bootstrap_weights(len(np.unique(world.user_codes[test])))

    def stats(scores: np.ndarray, part: np.ndarray):
        return user_stats(scores, world.labels[part], world.candidates[1][part], world.user_codes[part])

    pair = headroom_rankers(world, seed)
    two_tower = score(*pair["without"], idx)
    reader, data = pair["with_need"]

    def read(texts: list[str] | None) -> np.ndarray:
        """The reader's scores on valid + test with ``texts`` as their queries (None: the true needs)."""
        fed = copy.copy(data)
        if texts is not None:
            fed.query_table = torch.cat([data.query_table, torch.from_numpy(encode_texts(texts))])  # rows idx read the new
            fed.query_codes = data.query_codes.clone()
            fed.query_codes[torch.as_tensor(idx)] = torch.arange(len(idx), dtype=torch.int32) + len(data.query_table)
        return score(reader, fed, idx)

    def fused(r: np.ndarray) -> tuple[float, object]:
        """two-tower + alpha * reader, alpha chosen on the valid requests' GAUC: one scalar of trust."""
        alpha = max(ALPHAS, key=lambda a: stats(two_tower[:nv] + a * r[:nv], valid).value()["gauc"])
        return alpha, stats(two_tower[nv:] + alpha * r[nv:], test)

    base = stats(two_tower[nv:], test)
    rows = [("two_tower", "–", base, None, None)]
    for name in ("qe_rec", "round1/calibrate", "control"):  # the run's own rankers, for scale
        path = scores_file(run, name)
        if path.exists():
            rows.append((f"{path.stem} (the run's)", "", stats(np.load(path), test), None, None))
    r = read(None)
    rows.append(("true need", "100.0%", stats(r[nv:], test), *fused(r)))
    first: dict = {}
    done = json.loads((run / "state.json").read_text())["done"]
    for key in [k for k in done if k == "reasoner_warm" or (k.startswith("round") and not k.endswith("calibrate"))]:
        queries = reasoner_queries(world, Path(done[key]["path"]), idx)[1]
        needs = nearest_needs(world, queries)
        ok = true_need_named(world, test, needs[nv:])  # need accuracy, from the phrases found once
        for form, texts in (("nearest need", needs), ("query text", queries)):
            r = read(texts)
            row = (f"{key} ({form})", f"{np.mean(ok):.1%}", stats(r[nv:], test), *fused(r))
            first.setdefault(form, row)
            rows.append(row + (first[form],))

    def ci(a, b) -> str:
        d = paired_difference(a, b, boot)["gauc"]
        return f"{d['diff']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]"

    print(f"{run}: a two-tower and the headroom QE-Rec (trained on the true need's text; seed {seed}) reading each "
          "reasoner's test queries, alone (trusting) and fused with the two-tower (alpha on valid)\n")
    print("| queries fed to the reader | need acc. | trusting: GAUC | Δ vs two-tower | Δ vs warm reasoner | "
          "fused: alpha | Δ vs two-tower | Δ vs warm reasoner |")
    print("|---|---|---|---|---|---|---|---|")
    for name, acc, s, alpha, fs, *warm in rows:
        vs_warm = ["–", "–"] if not warm or warm[0][0] == name else [ci(warm[0][2], s), ci(warm[0][4], fs)]
        print(f"| {name} | {acc} | {summarize(s, boot)['gauc']:.4f} | {'–' if s is base else ci(base, s)} | {vs_warm[0]} | "
              + ("– | – |" if fs is None else f"{alpha:g} | {ci(base, fs)} |") + f" {vs_warm[1]} |")


if __name__ == "__main__":
    main()
