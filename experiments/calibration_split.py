"""Where should calibration learn how far to trust a query? (issue 26, item 3: trust fitted out of sample)

The loop calibrates QE-Rec on training requests, whose queries the reasoner learned (the warm start on their
teacher rows, RG-SFT and DPO on their Best-of-N winners), and serves it on test requests, which it never saw:
the query term's trust is fitted in sample and read out of sample. This re-calibrates a finished run's QE-Rec,
on the aligned reasoner (the run's final) and on the warm one (its control), by two recipes:

  train   the loop's: fine-tune on ranker.calib_max_requests training requests, early-stop on valid
  valid   out of sample: fine-tune on the valid requests of one half of the valid users, early-stop on the
          other half's (no reasoner trained on a valid request)

Everything else is the loop's calibration (KL to QE-Rec on the new queries, epochs, the nested towers frozen).
It prints test GAUC and expected GAUC, and final - control with paired 95% CIs, per recipe. The train recipe
re-does the run's own final and control: it must reproduce them (the yardstick), else the comparison is off.

    python experiments/calibration_split.py RUN_DIR [--out DIR]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgalign_rl.align.loop import ClosedLoop  # noqa: E402
from rgalign_rl.align.loop_config import LoopConfig  # noqa: E402
from rgalign_rl.config import from_dict  # noqa: E402
from rgalign_rl.ranker.protocol import class_of  # noqa: E402
from rgalign_rl.ranker.queries import query_embeddings  # noqa: E402
from rgalign_rl.ranker.train import RankerData, load_ranker, score, train_ranker  # noqa: E402
from rgalign_rl.world import load_world  # noqa: E402


def calibrated_scores(world, cfg: LoopConfig, reasoner: str, qe_rec: str, recipe: str, seed: int) -> tuple:
    """Test-ready scores of every request from QE-Rec re-calibrated on ``reasoner``'s queries, and its history."""
    prev, enc, meta = load_ranker(qe_rec)
    r = cfg.ranker
    train = world.indices("train")
    if r.calib_max_requests is not None and r.calib_max_requests < len(train):
        train = np.sort(np.random.default_rng(seed).choice(train, r.calib_max_requests, replace=False))
    valid = world.indices("valid")
    if recipe == "train":
        fit, stop = train, valid
    else:  # halves of the valid users: fit on one, stop on the other
        users = np.unique(world.user_codes[valid])
        half = set(np.random.default_rng(seed).permutation(users)[: len(users) // 2].tolist())
        in_half = np.array([u in half for u in world.user_codes[valid]])
        fit, stop = valid[in_half], valid[~in_half]
    rows = np.concatenate([train, valid, world.indices("test")])
    query = query_embeddings(world, f"reasoner:{reasoner}", meta["query_mode"], rows, cfg.reasoner.max_new_tokens)
    tcfg = dataclasses.replace(r.train, epochs=r.calib_epochs, kl_weight=r.calib_kl_weight, seed=seed)
    model, _, history = train_ranker(world, prev.cfg.arch, query, tcfg, reference=prev, ref_query=query, init=prev,
                                     encoder=enc, log=lambda *a: None, train_indices=fit, stop_indices=stop,
                                     query_text=prev.cfg.query_text, ranker_class=class_of(prev)[0],
                                     frozen_towers=bool(meta.get("nested_in")))
    return score(model, RankerData(world, enc, query), np.arange(len(world.samples))), history


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
    if cfg.rounds != 1 or cfg.ranker.calib_kl_inputs != "new":  # what calibrated_scores re-does
        raise SystemExit("this re-does one round's calibration with the KL reference on the new queries: "
                         f"the run has rounds={cfg.rounds}, ranker.calib_kl_inputs={cfg.ranker.calib_kl_inputs}")
    world = load_world(metrics["world"])
    rounds = cfg.rounds
    final, warm = done[f"round{rounds}/calibrate"]["reasoner"], done["reasoner_warm"]["path"]
    qe_rec = done["qe_rec"]["path"]
    loop = ClosedLoop(world, cfg, Path(a.out or run / "calibration_split"), log=lambda *x: None)
    seed = cfg.seed + 1  # round 1's calibration seed (ClosedLoop.recalibrated)
    print(f"run {run}: final's reasoner {final}, the control's {warm}")
    for recipe in a.recipes.split(","):
        for who, reasoner in (("final", final), ("control", warm)):
            scores, hist = calibrated_scores(world, cfg, reasoner, qe_rec, recipe, seed)
            m = loop.test_metrics(scores, f"{recipe}_{who}")
            np.save(loop.out / f"{recipe}_{who}.history.npy", np.array([h["valid_gauc"] for h in hist]))
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
