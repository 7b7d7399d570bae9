"""`rgalign compare`: DPO vs PPO vs GRPO vs RLOO on the same reward, from the same RG-SFT checkpoint,
with the same budget of reward calls, over the same seeds.

Per seed, the shared prefix (two-tower, warm reasoner, QE-Rec, round-1 RG-SFT) runs once under
``<out>/seed<S>/shared``; every algorithm then continues from that state in ``<out>/seed<S>/<algo>``
(aligner -> RG-CL -> calibration, one round). The report compares the final rankers (paired bootstrap
over the same test users), the aligners' probe curves and their cost.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from . import dist
from .align.evaluate import scores_file
from .align.loop import ClosedLoop
from .align.loop_config import LoopConfig, loop_config
from .config import from_dict, load_yaml
from .metrics import bootstrap_weights, paired_difference
from .report import md_table, paired_entries, plot_curve, plot_paired
from .run import command_line, prepare_world, run, write_json
from .world.stats import split_user_stats

SHARED = ("two_tower", "headroom", "reasoner_warm", "qe_rec", "control", "round1/rg_sft")
COLUMNS = ("gauc", "recall@3", "valid_reward", "kl_to_ref", "wall_s", "reward_calls")


def compare(config: str, algos: list[str], seeds: list[int], out: str, world_dir: str | None = None,
            overrides: list[str] | None = None, resume: bool = False, log=print) -> dict:
    from .align.aligners import ALIGNERS

    unknown = [a for a in algos if a not in ALIGNERS]
    if unknown:
        raise SystemExit(f"error: unknown algorithm(s) {', '.join(unknown)}; known: {', '.join(ALIGNERS)}")
    out_p = Path(out)
    if (out_p / "compare.json").exists() and not resume:
        raise SystemExit(f"error: {out} holds an earlier comparison: pass --resume, or choose another --out")
    overrides = [*(overrides or []), "rounds=1"]  # one round: every aligner starts from the same RG-SFT
    base = load_yaml(config, overrides)
    budget = from_dict(LoopConfig, base).align.reward_budget
    if budget is None:
        raise SystemExit("error: compare needs align.reward_budget (the reward calls every aligner may spend)")
    runs: dict[int, dict[str, dict]] = {}
    worlds: dict[int, str] = {}  # without --world every seed generates its own world and is scored on it
    for seed in seeds:
        shared = out_p / f"seed{seed}" / "shared"
        cfg = loop_config({**base, "seed": seed})
        dist.set_timeout(cfg.dist_timeout_s)  # before anything makes the process group
        shared.mkdir(parents=True, exist_ok=True)
        world = prepare_world(cfg, world_dir, shared)
        worlds[seed] = str(world.root)
        log(f"== seed {seed}: shared stages ({', '.join(SHARED)}) in {shared}")
        ClosedLoop(world, cfg, shared, log=log).run(until="round1/rg_sft")
        done = json.loads((shared / "state.json").read_text())["done"]
        runs[seed] = {}
        for algo in algos:
            run_dir = out_p / f"seed{seed}" / algo
            if dist.is_main() and not (run_dir / "scores").exists():
                shutil.copytree(shared / "scores", run_dir / "scores")
            dist.barrier()
            log(f"== seed {seed}: {algo}")
            runs[seed][algo] = run(config, str(world.root), str(run_dir), seed, [*overrides, f"align.algorithm={algo}"],
                                   resume=True, log=log, seed_state={k: done[k] for k in SHARED if k in done})
    summary = summarize_runs(runs, algos, worlds, out_p)
    summary["reward_budget"] = budget
    summary["command"] = command_line(config, world_dir, out, None, overrides[:-1], "compare",
                                      f"--algos {','.join(algos)} --seeds {','.join(map(str, seeds))}")
    if not dist.is_main():
        dist.barrier()
        return summary
    write_json(out_p / "compare.json", summary)
    report = write_compare_report(out_p, summary)
    log("\n" + summary["table"])
    log("\n" + summary["verdict"])
    log(f"\nreport: {report}")
    dist.barrier()
    return summary


def _stage(metrics: dict, name: str) -> dict:
    return next((s for s in metrics["stages"] if s["name"] == name), {})


def summarize_runs(runs: dict, algos: list[str], worlds: dict[int, str], out: Path) -> dict:
    """``worlds``: each seed's world folder (one folder for every seed with --world)."""
    from .world import load_world

    loaded = {root: load_world(root) for root in sorted(set(worlds.values()))}
    boots = {root: bootstrap_weights(len(np.unique(w.user_codes[w.indices("test")]))) for root, w in loaded.items()}

    def stats(seed, algo):
        scores = np.load(scores_file(out / f"seed{seed}" / algo, "round1/calibrate"))
        return split_user_stats(loaded[worlds[seed]], scores)

    rows = {}
    for algo in algos:
        per_seed = []
        for seed, by_algo in runs.items():
            m = by_algo[algo]
            final, al = _stage(m, "final"), _stage(m, algo)
            per_seed.append({"seed": seed, "gauc": final["gauc"], "recall@3": final["recall@3"],
                             "valid_reward": al.get("valid_reward"), "kl_to_ref": al.get("kl_to_ref"),
                             "wall_s": al.get("wall_s"), "reward_calls": al.get("reward_calls"),
                             "rolled_back": al.get("rolled_back"), "curve": al.get("curve", []),
                             "qe_rec_gauc": _stage(m, "qe_rec")["gauc"], "control_gauc": _stage(m, "control").get("gauc")})
        rows[algo] = {"seeds": per_seed, **{k: _mean_std([p[k] for p in per_seed]) for k in COLUMNS}}
    ranking = sorted(algos, key=lambda a: -rows[a]["gauc"][0])
    best = ranking[0]
    diffs = {a: [{"seed": s, **paired_difference(stats(s, a), stats(s, best), boots[worlds[s]])["gauc"]} for s in runs]
             for a in ranking[1:]}
    return {"algos": rows, "ranking": ranking, "paired_vs_best": diffs, "seeds": list(runs), "worlds": worlds,
            "table": _table(rows, ranking), "verdict": verdict(rows, ranking, diffs)}


def _mean_std(values) -> list[float | None]:
    v = [x for x in values if x is not None]
    if not v:
        return [None, None]
    return [float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0]


def _fmt(ms, digits=4) -> str:
    if ms[0] is None:
        return "–"
    return f"{ms[0]:.{digits}f}" + (f" ± {ms[1]:.{digits}f}" if ms[1] else "")


def _table(rows: dict, ranking: list[str]) -> str:
    head = ["algorithm", "final GAUC", "final Recall@3", "mean reward (valid)", "KL to ref", "wall s", "reward calls"]
    return md_table(head, [[a, _fmt(rows[a]["gauc"]), _fmt(rows[a]["recall@3"]), _fmt(rows[a]["valid_reward"]),
                            _fmt(rows[a]["kl_to_ref"]), _fmt(rows[a]["wall_s"], 0), _fmt(rows[a]["reward_calls"], 0)]
                           for a in ranking])


def verdict(rows: dict, ranking: list[str], diffs: dict) -> str:
    """A short verdict from the numbers: who leads on final GAUC, by how much, and whether the paired
    CIs (per seed) exclude zero."""
    best = ranking[0]
    lines = [f"On final test GAUC, {best} ranks first ({rows[best]['gauc'][0]:.4f})."]
    for a in ranking[1:]:
        d = diffs[a]
        mean = float(np.mean([x["diff"] for x in d]))
        cis = "; ".join(f"seed {x['seed']}: {x['diff']:+.4f} [{x['ci'][0]:+.4f}, {x['ci'][1]:+.4f}]" for x in d)
        clear = all(x["ci"][0] > 0 for x in d)
        lines.append(f"{best} vs {a}: {mean:+.4f} GAUC on average ({cis}) — "
                     + ("ahead in every seed with the CI above zero." if clear else
                        "not distinguishable: a paired CI includes zero."))
    qe = float(np.mean([p["qe_rec_gauc"] for p in rows[best]["seeds"]]))  # the same in every run of a seed
    above = [a for a in ranking if rows[a]["gauc"][0] > qe]
    lines.append(f"QE-Rec with the warm reasoner (the shared starting point): {qe:.4f} GAUC; "
                 + (f"above it after the loop: {', '.join(above)}." if above else "no aligner's final ranker beats it."))
    control = [p["control_gauc"] for p in rows[best]["seeds"]]
    if None not in control:  # the same calibration with the warm reasoner: what retraining alone gives
        c = float(np.mean(control))
        above = [a for a in ranking if rows[a]["gauc"][0] > c]
        lines.append(f"The control (QE-Rec calibrated the same way on the warm, unaligned reasoner): {c:.4f} GAUC; "
                     + (f"above it: {', '.join(above)}." if above else "no aligner's final ranker beats it."))
    top_reward = max(ranking, key=lambda a: rows[a]["valid_reward"][0] if rows[a]["valid_reward"][0] is not None else -1e9)
    lines.append(f"Highest mean reward on valid prompts: {top_reward} ({rows[top_reward]['valid_reward'][0]:.4f}); "
                 f"cheapest in wall time: {min(ranking, key=lambda a: rows[a]['wall_s'][0] or 1e9)}.")
    return "\n".join(lines)


def compare_plot_data(out: Path, summary: dict) -> list[dict]:
    """What final_paired.png draws, one entry per (algorithm, seed, reference, metric): each run's final ranker
    against QE-Rec and against the control (its metrics.json's ``vs_qe_rec`` / ``vs_control`` paired
    differences, exactly), and against the best algorithm (summary's ``paired_vs_best``, GAUC)."""
    out, entries = Path(out), []
    multi = len(summary["seeds"]) > 1
    for algo in summary["ranking"]:
        for seed in summary["seeds"]:
            name = f"{algo} (seed {seed})" if multi else algo
            path = out / f"seed{seed}" / algo / "metrics.json"
            final = _stage(json.loads(path.read_text()), "final") if path.exists() else {}
            for vs, ref in (("vs_qe_rec", "QE-Rec"), ("vs_control", "control")):
                entries += paired_entries(name, vs, ref, final.get(vs), final.get("kept_start"), f"{name} − {ref}")
    best = summary["ranking"][0]
    for algo, per_seed in summary.get("paired_vs_best", {}).items():
        for d in per_seed:
            name = f"{algo} (seed {d['seed']})" if multi else algo
            entries.append({"stage": name, "vs": "vs_best", "reference": f"best ({best})", "metric": "gauc",
                            "diff": d["diff"], "ci": list(d["ci"]), "kept_start": False,
                            "label": f"{name} − {best}"})
    return entries


def write_compare_report(out: Path, summary: dict) -> Path:
    curves = {}
    for algo, row in summary["algos"].items():
        for p in row["seeds"]:
            curves[f"{algo} (seed {p['seed']})" if len(row["seeds"]) > 1 else algo] = p["curve"]
    plot_curve(curves, "reward", out / "reward_vs_step.png")
    plot_curve(curves, "kl", out / "kl_vs_step.png")
    plot_paired(compare_plot_data(out, summary), out / "final_paired.png",
                title="final rankers: paired differences (95% CI over each seed's test users)")
    text = ["# Aligner comparison", "",
            f"Seeds {', '.join(map(str, summary['seeds']))}; every algorithm starts from the same RG-SFT checkpoint "
            f"of its seed, is scored by the same frozen reward and may spend {summary['reward_budget']} reward calls "
            "(DPO: candidates scored to build its pairs; PPO: one per rollout completion; GRPO/RLOO: one per "
            "generated completion). Values: mean ± std over seeds; final = after RG-CL and calibration.", "",
            summary["table"], "", "## Verdict", "", summary["verdict"], "",
            "![final rankers, paired differences](final_paired.png)", "",
            "final_paired.png: each algorithm's final ranker minus QE-Rec, minus the control (each run's metrics.json) "
            "and minus the best algorithm's, per seed, with paired 95% CIs over the same test users and a zero line; "
            "hollow markers: the final calibration kept its start.", "",
            "![reward vs step](reward_vs_step.png)", "", "![KL vs step](kl_vs_step.png)", "",
            "Curves come from the probe: the same valid prompts sampled every few optimizer steps, scored by the "
            "frozen reward, KL to the RG-SFT checkpoint. Per-run reports: `seed<S>/<algo>/report.md`.", "",
            "## Reproduce", "", "```", summary["command"], "```"]
    path = out / "report.md"
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(text) + "\n")
    tmp.replace(path)
    return path

