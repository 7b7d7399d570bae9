"""Control for the closed loop: calibrate QE-Rec exactly as the run's final stage did, but on the *warm*
(unaligned) reasoner. If this control reaches the run's final GAUC, the final stage's gain over QE-Rec
came from the extra ranker training, not from the aligned reasoner. Runs made since `eval.control`
exists carry this stage (`control`) themselves; this script adds it to older runs (`ClosedLoop.control`).

    python experiments/calibration_control.py RUN_DIR [--out DIR]

Reads RUN_DIR/metrics.json (config, world) and state.json (warm reasoner, QE-Rec ranker); writes the
control under --out (default RUN_DIR/control) and prints test metrics with paired CIs against the run's
QE-Rec and final stages (scores from RUN_DIR/scores).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgalign_rl.align.evaluate import scores_file  # noqa: E402
from rgalign_rl.align.loop import ClosedLoop  # noqa: E402
from rgalign_rl.align.loop_config import LoopConfig  # noqa: E402
from rgalign_rl.config import from_dict  # noqa: E402
from rgalign_rl.world import load_world  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--out")
    a = ap.parse_args()
    run = Path(a.run)
    metrics = json.loads((run / "metrics.json").read_text())
    done = json.loads((run / "state.json").read_text())["done"]
    cfg = from_dict(LoopConfig, metrics["config"])
    cfg.log.report_to = "none"
    world = load_world(metrics["world"])
    if "control" in done:  # the run carries its own control stage: report it
        loop, res = ClosedLoop(world, cfg, run, log=lambda *x: None), done["control"]
        pairs = (("qe_rec", "vs the run's QE-Rec"), (f"round{cfg.rounds}/calibrate", "vs the run's final"))
    else:
        out = Path(a.out or run / "control")
        loop = ClosedLoop(world, cfg, out, log=lambda *x: None)
        warm, qe_dir = done["reasoner_warm"]["path"], done["qe_rec"]["path"]
        res = loop.stage("control", lambda: loop.control(warm, qe_dir))
        for key in ("qe_rec", f"round{cfg.rounds}/calibrate"):
            np.save(loop.scores_path(f"run_{key}"), np.load(scores_file(run, key)))
        pairs = (("run_qe_rec", "vs the run's QE-Rec"), (f"run_round{cfg.rounds}/calibrate", "vs the run's final"))
    m = res["metrics"]
    print(f"control (calibrated on the warm reasoner): GAUC {m['gauc']:.4f} [{m['gauc_ci'][0]:.4f}, {m['gauc_ci'][1]:.4f}], "
          f"Recall@3 {m['recall@3']:.4f}")
    for key, label in pairs:
        d = loop.versus(key, "control")
        print(f"  control {label}: GAUC {d['gauc']['diff']:+.4f} [{d['gauc']['ci'][0]:+.4f}, {d['gauc']['ci'][1]:+.4f}], "
              f"Recall@3 {d['recall@3']['diff']:+.4f} [{d['recall@3']['ci'][0]:+.4f}, {d['recall@3']['ci'][1]:+.4f}]")


if __name__ == "__main__":
    main()
