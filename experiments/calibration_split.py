"""Where should calibration learn how far to trust a query? (issue 26, item 3: trust fitted out of sample)

The loop calibrates QE-Rec on training requests, whose queries the reasoner learned (the warm start on their
teacher rows, RG-SFT and DPO on their Best-of-N winners), and serves it on test requests, which it never saw:
the query term's trust is fitted in sample and read out of sample. This re-calibrates a finished run's QE-Rec,
on the aligned reasoner (the run's final) and on the warm one (its control), by two recipes:

  train   the loop's: fine-tune on ranker.calib_max_requests training requests, early-stop on valid
  valid   out of sample: fine-tune on the valid requests of one half of the valid users, early-stop on the
          other half's (no reasoner trained on a valid request)

Both go through the loop's own ``calibrate`` (KL to QE-Rec, epochs, the nested towers frozen), on these requests.
It prints test GAUC and expected GAUC, and final - control with paired 95% CIs, per recipe. The train recipe
re-does the run's own final and control: it must reproduce them (the yardstick), else the comparison is off.

    python experiments/calibration_split.py RUN_DIR [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgalign_rl.align.calibrate import calibrate  # noqa: E402
from rgalign_rl.align.loop import ClosedLoop  # noqa: E402
from rgalign_rl.align.loop_config import LoopConfig  # noqa: E402
from rgalign_rl.config import from_dict  # noqa: E402
from rgalign_rl.ranker.queries import query_embeddings  # noqa: E402
from rgalign_rl.ranker.train import RankerData, load_ranker, score  # noqa: E402
from rgalign_rl.world import load_world  # noqa: E402


def calibrated_scores(world, cfg: LoopConfig, reasoner: str, qe_rec: str, recipe: str, seed: int, out: Path) -> tuple:
    """Scores of every request by QE-Rec re-calibrated on ``reasoner``'s queries (the loop's ``calibrate``, on the
    recipe's requests), and its history."""
    r = cfg.ranker
    rows = {}
    if recipe == "valid":  # halves of the valid users: fit on one, stop on the other
        valid = world.indices("valid")
        users = np.unique(world.user_codes[valid])
        half = set(np.random.default_rng(seed).permutation(users)[: len(users) // 2].tolist())
        in_half = np.array([u in half for u in world.user_codes[valid]])
        rows = {"fit_indices": valid[in_half], "stop_indices": valid[~in_half]}
    path = calibrate(world, reasoner, qe_rec, out, r.calib_kl_weight, r.calib_epochs, seed, log=lambda *a: None,
                     train=r.train, max_requests=r.calib_max_requests, max_new_tokens=cfg.reasoner.max_new_tokens,
                     kl_inputs=r.calib_kl_inputs, **rows)
    model, enc, meta = load_ranker(path)
    query = query_embeddings(world, meta["queries"], meta["query_mode"], world.indices("test"),
                             cfg.reasoner.max_new_tokens)
    return score(model, RankerData(world, enc, query), np.arange(len(world.samples))), meta["history"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--out", help="where the scores go (default RUN_DIR/calibration_split)")
    ap.add_argument("--recipes", default="train,valid")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides for the calibrations (ranker.calib_epochs=12)")
    a = ap.parse_args()
    run = Path(a.run)
    metrics = json.loads((run / "metrics.json").read_text())
    done = json.loads((run / "state.json").read_text())["done"]
    raw = metrics["config"]
    for item in a.set:  # key.path=value, as on the command line
        key, _, value = item.partition("=")
        *path, last = key.split(".")
        node = raw
        for p in path:
            node = node.setdefault(p, {})
        node[last] = yaml.safe_load(value)
    cfg = from_dict(LoopConfig, raw)
    cfg.log.report_to = "none"
    if cfg.rounds != 1:  # the final of R rounds calibrates round R-1's ranker; the control chains R of them
        raise SystemExit(f"this re-does a one-round run's calibration: the run has rounds={cfg.rounds}")
    world = load_world(metrics["world"])
    final, warm = done["round1/calibrate"]["reasoner"], done["reasoner_warm"]["path"]
    qe_rec = done["qe_rec"]["path"]
    loop = ClosedLoop(world, cfg, Path(a.out or run / "calibration_split"), log=lambda *x: None)
    seed = cfg.seed + 1  # round 1's calibration seed (ClosedLoop.recalibrated)
    print(f"run {run}: final's reasoner {final}, the control's {warm}")
    for recipe in a.recipes.split(","):
        for who, reasoner in (("final", final), ("control", warm)):
            scores, hist = calibrated_scores(world, cfg, reasoner, qe_rec, recipe, seed, loop.out / f"{recipe}_{who}")
            m = loop.test_metrics(scores, f"{recipe}_{who}")
            best = max(hist, key=lambda h: h["valid_gauc"])
            print(f"{recipe:5s} {who:7s} test GAUC {m['gauc']:.4f}  expected {m['expected_gauc']:.4f}"
                  f"  (best epoch {best['epoch']} of {len(hist) - 1}, stop GAUC {best['valid_gauc']:.4f})", flush=True)
        d = loop.headline_versus(f"{recipe}_control", f"{recipe}_final")
        print(f"{recipe:5s} final - control: " + ", ".join(
            f"{k} {v['diff']:+.4f} [{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}]" for k, v in d.items()
            if k in ("gauc", "expected_gauc")),
            flush=True)
    own = {n: _stage(metrics, n) for n in ("final", "control")}
    print("the run's own: " + "; ".join(f"{n} GAUC {s['gauc']:.4f} expected {s['expected_gauc']:.4f}" for n, s in own.items()))


def _stage(metrics: dict, name: str) -> dict:
    return next(s for s in metrics["stages"] if s["name"] == name)


if __name__ == "__main__":
    main()
