"""report.md and PNG plots for `rgalign run`: the results table with CIs, the reasoner's diagnostics
per stage, the aligner's reward and KL curves, the metric definitions, what a simulated world gives its
teachers, and the command that reproduces the run."""
from __future__ import annotations

import json
from pathlib import Path

from . import metrics as metric_defs
from .metrics import EXPECTED, HEADLINE, PAIRED

LABELS = {"gauc": "GAUC", "error_rate": "error rate", "recall@3": "Recall@3", "ndcg@3": "NDCG@3", "mrr": "MRR",
          EXPECTED: "expected GAUC"}


def paired(d: dict) -> list[str]:
    """The paired metrics a comparison holds: GAUC and Recall@3, and the expected GAUC where the world has an oracle."""
    return [k for k in (*PAIRED, EXPECTED) if k in d]


def cell(row: dict, key: str) -> str:
    v = row.get(key)
    if v is None:
        return "–"
    ci = row.get(f"{key}_ci")
    return f"{v:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else f"{v:.4f}"


def diff_cell(d: dict | None) -> str:
    if not d:
        return "–"
    return f"{d['diff']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def gains(stages: dict) -> dict | None:
    """Final vs QE-Rec: relative error-rate reduction and the share of the QE-Rec -> oracle gap closed."""
    q, f = stages.get("qe_rec"), stages.get("final")
    if not q or not f or q.get("gauc") is None or f.get("gauc") is None:
        return None
    out = {"error_reduction": (q["error_rate"] - f["error_rate"]) / q["error_rate"]}
    o = stages.get("oracle")
    if o and o["gauc"] > q["gauc"]:
        out["gap_closed"] = (f["gauc"] - q["gauc"]) / (o["gauc"] - q["gauc"])
    return out


REFERENCES = {"vs_qe_rec": "QE-Rec", "vs_control": "control", "vs_two_tower": "two-tower"}
# the paired difference(s) a reader compares each stage with (metrics.json's vs_* keys); other stages of the
# loop (rg_sft, the aligner, rg_cl, calibrations, final, control): QE-Rec, and for final the control as well
STAGE_REFERENCES = {"two_tower": (), "oracle": (), "qe_rec": ("vs_two_tower",), "headroom": ("vs_two_tower",)}
LOOP_REFERENCES = ("vs_qe_rec", "vs_control")
COLORS = {"QE-Rec": "tab:blue", "control": "tab:orange", "two-tower": "tab:green"}


def paired_plot_data(rows: list[dict]) -> list[dict]:
    """What stages.png draws in its paired panels, one entry per (stage, reference, metric): metrics.json's
    paired difference ``diff`` (stage - reference) and its paired 95% CI ``ci``, exactly as the stage row
    holds them, with ``kept_start`` (the stage kept its starting point: its difference is the start's)."""
    return [e for r in rows for vs in STAGE_REFERENCES.get(r["name"], LOOP_REFERENCES)
            for e in paired_entries(r["name"], vs, REFERENCES[vs], r.get(vs), r.get("kept_start"))]


def paired_entries(stage: str, vs: str, reference: str, d: dict | None, kept_start, label: str | None = None) -> list[dict]:
    """One plot entry per paired metric of the comparison ``d`` ({metric: {"diff", "ci"}}) of ``stage`` against
    ``reference``."""
    return [{"stage": stage, "vs": vs, "reference": reference, "metric": k, "diff": d[k]["diff"], "ci": list(d[k]["ci"]),
             "kept_start": bool(kept_start), **({"label": label} if label else {})} for k in paired(d or {})]


def _draw_paired(ax, entries: list[dict], title: str) -> None:
    """Horizontal paired differences with their CIs, a zero line; kept-start entries hollow and annotated."""
    ax.axvline(0.0, color="black", lw=0.8)
    for y, e in enumerate(entries):
        color = COLORS.get(e["reference"], "tab:gray")
        ax.errorbar([e["diff"]], [y], xerr=[[e["diff"] - e["ci"][0]], [e["ci"][1] - e["diff"]]], fmt="o", capsize=3,
                    color=color, mfc="white" if e["kept_start"] else color, mew=1.5)
        if e["kept_start"]:
            ax.annotate("kept its start", (e["ci"][1], y), xytext=(4, 0), textcoords="offset points",
                        va="center", fontsize=7, color="dimgray")
    ax.set_yticks(range(len(entries)), [e.get("label") or f"{e['stage']} − {e['reference']}" for e in entries],
                  fontsize=8)
    ax.set_ylim(len(entries) - 0.5, -0.5)  # first entry on top
    ax.set_title(title, fontsize=9)
    ax.locator_params(axis="x", nbins=5)
    ax.tick_params(axis="x", labelsize=8)
    ax.margins(x=0.15)  # room for the "kept its start" notes
    ax.grid(alpha=0.3, axis="x")


def plot_paired(entries: list[dict], path: Path, levels: list[dict] | None = None, title: str = "") -> None:
    """One column per metric: the paired differences (``entries``, as :func:`paired_plot_data` gives them) with
    their paired 95% CIs and a zero line; ``levels`` (stage rows): a second row of panels with each stage's
    level and its unpaired CI over users, for scale only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = paired({e["metric"] for e in entries}) or list(PAIRED)
    levels = [r for r in (levels or []) if r.get("gauc") is not None]
    n = max(len([e for e in entries if e["metric"] == k]) for k in keys) if entries else 1
    heights = [max(2.2, 0.32 * n + 1.0)] + ([2.8] if levels else [])
    fig, axes = plt.subplots(len(heights), len(keys), figsize=(5.2 * len(keys), sum(heights) + 0.3),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for j, k in enumerate(keys):
        ax = axes[0][j]
        es = [e for e in entries if e["metric"] == k]
        if es:
            _draw_paired(ax, es, f"Δ test {LABELS[k]}: stage − reference (paired 95% CI)")
        else:
            ax.text(0.5, 0.5, "no paired comparison", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
        if levels:
            _draw_levels(axes[1][j], levels, k)
    refs = list(dict.fromkeys(e["reference"] for e in entries))
    handles = [plt.Line2D([], [], marker="o", ls="", color=COLORS.get(ref, "tab:gray"), label=f"vs {ref}")
               for ref in refs]
    if any(e["kept_start"] for e in entries) or any(r.get("kept_start") for r in levels):
        handles.append(plt.Line2D([], [], marker="o", ls="", color="gray", mfc="white", label="kept its start"))
    if handles:
        fig.legend(handles=handles, loc="upper right", fontsize=8, ncol=len(handles))
    if title:
        fig.suptitle(title, fontsize=10, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.94 if handles or title else 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _draw_levels(ax, rows: list[dict], k: str) -> None:
    rows = [r for r in rows if r.get(k) is not None]
    for x, r in enumerate(rows):
        v = r[k]
        ci = r.get(f"{k}_ci") or [v, v]
        ax.errorbar([x], [v], yerr=[[v - ci[0]], [ci[1] - v]], fmt="o", capsize=3, color="tab:gray",
                    mfc="white" if r.get("kept_start") else "tab:gray", mew=1.5)
    ax.set_xticks(range(len(rows)), [r["name"] for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_title(f"test {LABELS[k]} levels (unpaired 95% CI, for scale)", fontsize=9)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(alpha=0.3)


def plot_stages(rows: list[dict], path: Path) -> list[dict]:
    """stages.png: every stage's paired differences against the reference a reader compares it with (QE-Rec;
    final also the control; QE-Rec and headroom the two-tower), then the unpaired levels; returns the
    plotted paired data (:func:`paired_plot_data`)."""
    data = paired_plot_data(rows)
    plot_paired(data, path, levels=rows)
    return data


CURVE_LABELS = {"reward": "mean reward (probe, valid prompts)", "kl": "KL to the aligner's start (probe)"}


def plot_curve(curves: dict[str, list[dict]], key: str, path: Path) -> None:
    """``key`` (reward | kl) vs optimizer step, one line per label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for label, curve in curves.items():
        if curve:
            ax.plot([p["step"] for p in curve], [p[key] for p in curve], marker=".", label=label)
    ax.set_xlabel("step (DPO, GRPO, RLOO: optimizer step; PPO: rollout)")
    ax.set_ylabel(CURVE_LABELS[key])
    ax.grid(alpha=0.3)
    if any(curves.values()):
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def definitions() -> str:
    doc = metric_defs.__doc__.split("Definitions (also written into every report):", 1)[-1]
    return doc.strip()


def teachers_section(world_dir: str) -> str:
    meta_path = Path(world_dir) / "world.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if not meta.get("teachers"):
        return "This world has no simulated teachers (no teachers.jsonl, or no teacher parameters in world.json)."
    lines = [meta.get("description", ""), "",
             "Each teacher is handed the request's hidden need for free (a simulator fact that neither the "
             "reasoner nor the ranker sees) and writes a query from it: `coverage` is the share of requests it "
             "answers; with probability `correct` it names the true need, `vague` a generic topic phrase, and "
             "otherwise a wrong need of the same topic (echo: any topic); `synonym` rewords a word, `dropout` drops "
             "one.", "",
             md_table(["teacher", *sorted(next(iter(meta["teachers"].values())))],
                      [[name, *[str(v) for _, v in sorted(p.items())]] for name, p in sorted(meta["teachers"].items())])]
    sim = meta.get("shopsim", {})
    if sim:
        launch = sim.get("cold_launch_day", 28)  # worlds written before the knob launched cold intents on day 28
        lines += ["", f"World knobs: semantic_gap={sim.get('semantic_gap')} (cold intents launch on day {launch}), "
                      f"teacher_bias={sim.get('teacher_bias')} "
                      f"(bias_rate {sim.get('bias_rate')}: in the biased segment atlas names the partner need instead "
                      f"of the true one this often, a many-to-one error naive distillation copies). Test requests' teacher rows are never read by any stage."]
    return "\n".join(lines)


def write_run_report(out: str | Path, metrics: dict, command: str) -> Path:
    out = Path(out)
    rows = metrics["stages"]
    by = {r["name"]: r for r in rows}
    plot_stages(rows, out / "stages.png")
    curves = {r["name"]: r["curve"] for r in rows if r.get("curve")}
    for key in ("reward", "kl"):
        plot_curve(curves, key, out / f"aligner_{key}.png")
    cfg = metrics["config"]
    g = gains(by)
    columns = [*HEADLINE, *([EXPECTED] if any(r.get(EXPECTED) is not None for r in rows) else [])]
    text = [f"# RGAlign run `{out.name}`", "",
            f"World `{metrics['world']}`, seed {cfg['seed']}, reasoner `{cfg['reasoner']['preset']}`, aligner "
            f"`{cfg['align']['algorithm']}`, reward `{cfg['reward']['name']}`, rounds {cfg['rounds']}.", "",
            *_stopped_early(metrics.get("stopped_early")),
            "## Results (test split, 95% CIs: bootstrap over users)", "",
            md_table(["stage", *[LABELS[k] for k in columns], "Δ GAUC vs QE-Rec (paired CI)", "kept its start"],
                     [[r["name"], *[cell(r, k) for k in columns], diff_cell((r.get("vs_qe_rec") or {}).get("gauc")),
                       _kept(r)] for r in rows if r.get("gauc") is not None]),
            *_kept_note(rows)]
    if g:
        text += ["", f"Final vs QE-Rec with the warm reasoner: error rate {by['qe_rec']['error_rate']:.4f} -> "
                     f"{by['final']['error_rate']:.4f}: relative error reduction {100 * g['error_reduction']:+.1f}%"
                 + ("" if g["error_reduction"] > 0 else " (negative: the loop made it worse)")
                 + (f"; share of the QE-Rec -> oracle gap closed {100 * g['gap_closed']:+.1f}%." if "gap_closed" in g
                    else ".")]
    qt = by.get("qe_rec", {}).get("vs_two_tower")
    if qt:
        d = qt["gauc"]
        verdict = ("beats" if d["ci"][0] > 0 else "falls below" if d["ci"][1] < 0 else "is within noise of")
        text += ["", f"QE-Rec (warm reasoner's queries) {verdict} the two-tower, the production baseline without a "
                     "query (paired CI): " + ", ".join(f"{LABELS[k]} {diff_cell(qt[k])}" for k in paired(qt)) + "."
                 + (" QE-Rec kept its two-tower start (no epoch beat it on valid GAUC): its difference is "
                    "the start's, not a measurement of what the query adds." if by["qe_rec"].get("kept_start") else "")]
        groups = by["qe_rec"].get("vs_two_tower_by_group")
        if groups:
            text += ["", "Where it does, by the group of the request's true need (cold: its intent launched late; "
                         + group_cuts_text(by["qe_rec"].get("need_group_cuts")) + "):", "",
                     md_table(["need group", "test requests", "Δ GAUC QE-Rec - two-tower (paired CI)", "verdict"],
                              [[g, str(v["requests"]), diff_cell(v), "beats" if v["ci"][0] > 0 else
                                "below" if v["ci"][1] < 0 else "within noise"] for g, v in groups.items()])]
    vc = by.get("final", {}).get("vs_control")
    if vc:
        ctl = by.get("control", {})
        text += ["", "Final vs control (the same calibration with the warm, unaligned reasoner: what retraining the "
                     "ranker gives by itself), i.e. alignment's own share: "
                     + ", ".join(f"{LABELS[k]} {diff_cell(vc[k])}" for k in paired(vc)) + "."
                 + (" The control kept its QE-Rec start (no calibration epoch beat it on valid GAUC): its numbers are "
                    "QE-Rec's, so this equals final vs QE-Rec and is not a measurement of what retraining alone gives."
                    if ctl.get("kept_start") else "")
                 + (f" The final ranker kept its start ({by['final'].get('kept_start_reason')})."
                    if by["final"].get("kept_start") else "")]
    hr, fin = (by.get(k, {}).get("vs_two_tower") for k in ("headroom", "final"))
    if hr:
        share = (f" ({100 * fin['gauc']['diff'] / hr['gauc']['diff']:+.1f}% of the headroom)"
                 if fin and hr["gauc"]["diff"] > 0 else "")
        text += ["", "World headroom (QE-Rec given the true need's text instead of a reasoner's query: what a perfect "
                     "reasoner could add over the two-tower): "
                 + ", ".join(f"{LABELS[k]} {diff_cell(hr[k])}" for k in paired(hr))
                 + (f"; the final stage over the two-tower: GAUC {diff_cell(fin['gauc'])}{share}." if fin else ".")
                 + (" The headroom ranker kept its two-tower start (no epoch beat it on valid GAUC): its "
                    f"{hr['gauc']['diff']:+.4f} is not a measurement of the world's headroom."
                    if by["headroom"].get("kept_start") else "")]
    text += ["", "![metrics per stage](stages.png)", "",
             "stages.png: each stage's paired difference (95% CI over the same users) against the reference it is "
             "read against (QE-Rec; final also the control; QE-Rec and headroom the two-tower), zero line marked; "
             "hollow markers: the stage kept its start. Below, the levels with their unpaired CIs, for scale: these "
             "overlap even where the paired differences are clear.", "", "## The reasoner at each stage", ""]
    if any("two_tower_misses" in (r.get("need_accuracy") or {}) for r in rows):
        text += ["Need accuracy: the share of test queries whose nearest need phrase is the request's true need; "
                 "\"where the two-tower misses\": on the test requests whose need is a candidate the two-tower ranks "
                 "below first, the only ones where naming it can still lift the ranking.", ""]
    text += [md_table(["stage", "valid reward", "need accuracy", "degenerate", "KL to ref", "rolled back", "wall s"],
                      [[r["name"], _f(r.get("valid_reward")), _need(r.get("need_accuracy")), _f(r.get("degenerate_share")),
                        _f(r.get("kl_to_ref")), str(r.get("rolled_back", "–")), _f(r.get("wall_s"), 1)]
                       for r in rows if "valid_reward" in r or "wall_s" in r])]
    for r in rows:
        if r.get("winner_share"):
            text += ["", f"Best-of-N winner share ({r['name']}): " +
                     ", ".join(f"{k} {100 * v:.1f}%" for k, v in sorted(r["winner_share"].items()))]
        if r.get("examples"):
            text += ["", f"Example test queries ({r['name']}): " + "; ".join(f"“{q}”" for q in r["examples"][:5])]
    text += ["", "## Aligner: reward and KL on the probe", "",
             "The probe samples the same valid prompts (temperature 1) every few optimizer steps and scores them "
             "with the frozen reward; the KL is to the aligner's starting checkpoint.", "",
             "![reward](aligner_reward.png) ![KL](aligner_kl.png)" if curves else
             "(no probe curve: the probe was off, or ZeRO-3 kept the weights partitioned)",
             "", "## Definitions", "", definitions(), "",
             "Need accuracy: the share of generated test queries whose nearest need phrase (text-encoder cosine) "
             "is the request's true need (simulated worlds only), overall and per teacher-bias segment.", "",
             "## What the simulator gives its teachers", "", teachers_section(metrics["world"]), "",
             "## Reproduce", "", "```", command, "```", "",
             f"Versions: {', '.join(f'{k} {v}' for k, v in metrics.get('versions', {}).items())}."]
    path = out / "report.md"
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(text) + "\n")
    tmp.replace(path)
    return path


def _stopped_early(stop: dict | None) -> list[str]:
    """The report's note on a run stopped by ``--until``: which stages ran, and the command that continues it."""
    if not stop:
        return []
    return [f"**Stopped early** after stage `{stop['after']}` (`--until {stop['until']}`): this report holds the "
            f"stages run so far ({', '.join(f'`{k}`' for k in stop['done'])}); comparisons with stages not yet run "
            f"are left out. Continue the run with `{stop['resume']}`.", ""]


def group_cuts_text(cuts: dict | None) -> str:
    """The need groups' cuts as report.md prints them (runs written before the cuts were recorded: the old
    fixed thresholds)."""
    if not cuts:
        return "rare / mid / frequent: < 200, 200-999, >= 1000 training requests carry it"
    lo, hi = cuts["cuts"]
    needs = cuts.get("needs", {})
    count = f" of the {sum(v for g, v in needs.items() if g != 'cold')} non-cold needs" if needs else ""
    mid = f"{lo + 1}-{hi}" if hi > lo + 1 else str(hi) if hi == lo + 1 else "none (the cuts tie)"
    return (f"rare / mid / frequent: <= {lo}, {mid}, > {hi} training requests carry it, cut at the 1/3 "
            f"and 2/3 quantiles of the training-request counts{count}")


def _kept(row: dict) -> str:
    """The results table's mark of a stage that kept its starting point."""
    if "kept_start" not in row:
        return "–"
    return "**yes**" if row["kept_start"] else "no"


def _kept_note(rows: list[dict]) -> list[str]:
    kept = [r for r in rows if r.get("kept_start")]
    if not kept:
        return []
    return ["", "Kept its start (its numbers are its starting point's, not a measurement of what the stage does): "
            + "; ".join(f"{r['name']}: {r.get('kept_start_reason', 'kept its start')}" for r in kept) + "."]


def _f(v, digits: int = 4) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


_NEED_LABEL = {"two_tower_misses": "where the two-tower misses"}


def _need(acc: dict | None) -> str:
    if not acc:
        return "–"
    rest = ", ".join(f"{_NEED_LABEL.get(k, k)} {100 * v:.1f}%" for k, v in acc.items() if k != "overall")
    return f"{100 * acc['overall']:.1f}%" + (f" ({rest})" if rest else "")
