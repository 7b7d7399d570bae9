"""Markdown tables for BENCHMARKS.md from finished `rgalign run` folders (their metrics.json), so that no
figure is copied by hand.

    python bench/loop_table.py RUN_DIR [RUN_DIR ...]

Prints one stage table per run (test metrics with CIs, paired Δ vs QE-Rec, the reasoner's diagnostics,
wall time) and, for several runs, the across-seed summary of final vs QE-Rec (mean ± std).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgalign_rl.report import _need, cell, diff_cell, gains  # noqa: E402


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


def summary(runs: list[tuple[str, dict]]) -> str:
    rows = []
    for name, m in runs:
        by = {s["name"]: s for s in m["stages"]}
        g = gains(by)
        rows.append({"run": name, "qe": by["qe_rec"]["gauc"], "final": by["final"]["gauc"],
                     "qe_r3": by["qe_rec"]["recall@3"], "final_r3": by["final"]["recall@3"],
                     "d": by["final"]["vs_qe_rec"]["gauc"], "d_r3": by["final"]["vs_qe_rec"]["recall@3"],
                     "red": g["error_reduction"], "gap": g.get("gap_closed"),
                     "need": (by["qe_rec"].get("need_accuracy") or {}).get("overall"),
                     "need_f": (by["final"].get("need_accuracy") or {}).get("overall")})
    lines = ["| run | QE-Rec GAUC | final GAUC | Δ GAUC [paired CI] | QE-Rec R@3 | final R@3 | Δ R@3 [paired CI] | error reduction | gap closed | need acc. QE-Rec -> final |",
             "|" + "---|" * 10]
    for r in rows:
        need = "" if r["need"] is None else f"{100 * r['need']:.1f}% -> {100 * r['need_f']:.1f}%"
        lines.append(f"| {r['run']} | {r['qe']:.4f} | {r['final']:.4f} | {diff_cell(r['d'])} | {r['qe_r3']:.4f} | "
                     f"{r['final_r3']:.4f} | {diff_cell(r['d_r3'])} | {100 * r['red']:+.1f}% | "
                     f"{_pct(r['gap'])} | {need} |")
    if len(rows) > 1:
        def ms(key, scale=1.0, digits=4):
            v = np.array([r[key] for r in rows]) * scale
            return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"
        lines.append(f"| mean ± std | {ms('qe')} | {ms('final')} | | {ms('qe_r3')} | {ms('final_r3')} | | "
                     f"{ms('red', 100, 1)}% | | |")
    return "\n".join(lines)


def main() -> None:
    runs = [(p, json.loads((Path(p) / "metrics.json").read_text())) for p in sys.argv[1:]]
    for name, m in runs:
        print(f"#### {name}\n\n{stage_table(m)}\n")
    print(summary(runs))


if __name__ == "__main__":
    main()
