"""Markdown tables for BENCHMARKS.md from finished `rgalign run` folders (their metrics.json), so that no
figure is copied by hand.

    python experiments/loop_table.py RUN_DIR [RUN_DIR ...]

Prints one stage table per run (test metrics with CIs, paired Δ vs QE-Rec, the reasoner's diagnostics,
wall time) and the summary of final vs QE-Rec and vs the control (mean ± std over several runs). The
control is the run's `control` stage or, for runs made before it existed, RUN_DIR/control written by
experiments/calibration_control.py.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgalign_rl.align.evaluate import scores_file  # noqa: E402
from rgalign_rl.metrics import bootstrap_weights, paired_difference  # noqa: E402
from rgalign_rl.report import _need, cell, diff_cell, gains  # noqa: E402
from rgalign_rl.world import load_world  # noqa: E402
from rgalign_rl.world.stats import split_user_stats  # noqa: E402


def stage_table(metrics: dict) -> str:
    head = "| stage | GAUC [95% CI] | Recall@3 [95% CI] | Δ GAUC vs QE-Rec [paired CI] | valid reward | need acc. | KL to ref | wall s |"
    lines = [head, "|" + "---|" * 8]
    for r in metrics["stages"]:
        d = (r.get("vs_qe_rec") or {}).get("gauc")
        lines.append(f"| {r['name']} | {cell(r, 'gauc')} | {cell(r, 'recall@3')} | {diff_cell(d)} | "
                     f"{_num(r.get('valid_reward'))} | {_need(r.get('need_accuracy'))} | {_num(r.get('kl_to_ref'), 3)} | "
                     f"{_num(r.get('wall_s'), 0)} |")
    return "\n".join(lines)


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:+.1f}%"


def _num(v, digits=4) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def control_of(run: str, m: dict, by: dict) -> tuple[float | None, dict | None]:
    """(control GAUC, final - control paired differences) from the run's control stage or RUN/control."""
    if "control" in by:
        return by["control"]["gauc"], by["final"].get("vs_control")
    path = scores_file(Path(run) / "control", "control")
    if not path.exists():
        return None, None
    world = load_world(m["world"])
    boot = bootstrap_weights(len(np.unique(world.user_codes[world.indices("test")])))
    control = split_user_stats(world, np.load(path))
    final = split_user_stats(world, np.load(scores_file(run, f"round{m['config']['rounds']}/calibrate")))
    return float(control.value()["gauc"]), paired_difference(control, final, boot)


def summary(runs: list[tuple[str, dict]]) -> str:
    rows = []
    for name, m in runs:
        by = {s["name"]: s for s in m["stages"]}
        g = gains(by)
        control, vs_control = control_of(name, m, by)
        rows.append({"run": name, "qe": by["qe_rec"]["gauc"], "final": by["final"]["gauc"],
                     "qe_r3": by["qe_rec"]["recall@3"], "final_r3": by["final"]["recall@3"],
                     "d": by["final"]["vs_qe_rec"]["gauc"], "d_r3": by["final"]["vs_qe_rec"]["recall@3"],
                     "red": g["error_reduction"], "gap": g.get("gap_closed"),
                     "need": (by["qe_rec"].get("need_accuracy") or {}).get("overall"),
                     "need_f": (by["final"].get("need_accuracy") or {}).get("overall"),
                     "ctl": control, "d_ctl": (vs_control or {}).get("gauc"), "d_ctl_r3": (vs_control or {}).get("recall@3")})
    lines = ["| run | QE-Rec GAUC | final GAUC | Δ GAUC [paired CI] | QE-Rec R@3 | final R@3 | Δ R@3 [paired CI] | error reduction | gap closed | need acc. QE-Rec -> final | control GAUC | final - control GAUC [paired CI] | final - control R@3 [paired CI] |",
             "|" + "---|" * 13]
    for r in rows:
        need = "" if r["need"] is None else f"{100 * r['need']:.1f}% -> {100 * r['need_f']:.1f}%"
        lines.append(f"| {r['run']} | {r['qe']:.4f} | {r['final']:.4f} | {diff_cell(r['d'])} | {r['qe_r3']:.4f} | "
                     f"{r['final_r3']:.4f} | {diff_cell(r['d_r3'])} | {100 * r['red']:+.1f}% | "
                     f"{_pct(r['gap'])} | {need} | {_num(r['ctl'])} | {diff_cell(r['d_ctl'])} | {diff_cell(r['d_ctl_r3'])} |")
    if len(rows) > 1:
        def ms(key, scale=1.0, digits=4, sign=""):
            """Mean ± std over runs of a value or of a paired difference's point ('' if a run lacks it)."""
            v = np.array([r[key]["diff"] if isinstance(r[key], dict) else r[key] for r in rows], float) * scale
            return "" if np.isnan(v).any() else f"{v.mean():{sign}.{digits}f} ± {v.std(ddof=1):.{digits}f}"
        lines.append(f"| mean ± std | {ms('qe')} | {ms('final')} | {ms('d', sign='+')} | {ms('qe_r3')} | {ms('final_r3')} | "
                     f"{ms('d_r3', sign='+')} | {ms('red', 100, 1, '+')}% | | | {ms('ctl')} | {ms('d_ctl', sign='+')} | "
                     f"{ms('d_ctl_r3', sign='+')} |")
    return "\n".join(lines)


def versus_two_tower(runs: list[tuple[str, dict]]) -> str:
    """QE-Rec minus the two-tower per run: overall and per need group (metrics.json's vs_two_tower_by_group)."""
    groups = ("cold", "rare", "mid", "frequent")
    lines = ["| run | QE-Rec - two-tower GAUC [paired CI] | Recall@3 | " + " | ".join(groups) + " |",
             "|" + "---|" * (3 + len(groups))]
    for name, m in runs:
        q = next(s for s in m["stages"] if s["name"] == "qe_rec")
        by = q.get("vs_two_tower_by_group") or {}
        lines.append(f"| {name} | {diff_cell(q['vs_two_tower']['gauc'])} | {diff_cell(q['vs_two_tower']['recall@3'])} | "
                     + " | ".join(diff_cell(by.get(g)) for g in groups) + " |")
    return "\n".join(lines)


def main() -> None:
    runs = [(p, json.loads((Path(p) / "metrics.json").read_text())) for p in sys.argv[1:]]
    for name, m in runs:
        print(f"#### {name}\n\n{stage_table(m)}\n")
    if all(any(s["name"] == "final" for s in m["stages"]) for _, m in runs):
        print(summary(runs) + "\n")
    print(versus_two_tower(runs))


if __name__ == "__main__":
    main()
