"""What `rgalign diagnose` writes: RUN/diagnose/diagnose.json, its plots, and report.md's Diagnosis section
(replaced on every call, so diagnosing a run twice leaves one section)."""
from __future__ import annotations

import json
from pathlib import Path

from .diagnose import GROUPS, MARK
from .report import diff_cell, group_cuts_text, md_table


def _pct(v) -> str:
    return "–" if v is None else f"{v:.1%}"


def _num(v, fmt: str = "{:.4f}") -> str:
    return "–" if v is None else fmt.format(v)


def markdown(d: dict) -> str:
    groups = [g for g in GROUPS if g in d["groups"]]
    head = [f"{g} (n={d['groups'][g]})" for g in groups]
    how = (f"the true need's frequency in training requests (cold: launched late; {group_cuts_text(d.get('group_cuts'))})"
           if d["group_by"] == "need" else
           "the clicked intent's training clicks (cold: none; then cut at the 1/3 and 2/3 quantiles of the rest, ties low), as the oracle names no needs")
    text = [MARK, "## Diagnosis (`rgalign diagnose`)", "", f"Test requests grouped by {how}.", "",
            "Request AUC (each clicked request's own AUC, averaged) / need accuracy of the stage's greedy queries:", ""]
    rows = [[s["stage"]] + [_num(s["auc"].get(g)) + (f" / {_pct((s.get('need_accuracy') or {}).get(g))}"
                                                    if s.get("need_accuracy") else "") for g in groups] for s in d["stages"]]
    text.append(md_table(["stage"] + head, rows))
    drift = [s for s in d["stages"] if "queries_changed" in s]
    if drift:
        text += ["", "Drift from the warm reasoner (share of test queries changed; sampled KL to the stage's start):", "",
                 md_table(["stage", "queries changed", "KL to start", "valid reward"],
                          [[s["stage"], _pct(s["queries_changed"]), _num(s.get("kl_to_ref"), "{:.3f}"),
                            _num(s.get("valid_reward"))] for s in drift])]
    for rnd in d["winners"]:
        src = rnd["sources"]
        cols = ["group"] + [f"{s} wins" for s in src]
        has_need = any("need_accuracy" in c for c in rnd["groups"].values())
        if has_need:
            cols += [f"{s} right" for s in src] + ["winner right", "any right"]
        rows = []
        for g, c in rnd["groups"].items():
            r = [f"{g} (n={c['requests']})"] + [_pct(c["winner_share"][s]) for s in src]
            if has_need:
                r += [_pct(c["need_accuracy"].get(s)) for s in src] + [_pct(c["need_accuracy"]["winner"]), _pct(c["need_accuracy"]["any"])]
            rows.append(r)
        text += ["", f"Best-of-N, {rnd['round']} (training requests): each source's share of the reward's winners"
                 + (", and how often its candidates, the winner and any candidate name the true need" if has_need else "") + ":",
                 "", md_table(cols, rows)]
    if d["reward_agreement"]:
        text += agreement_markdown(d["reward_agreement"])
    if d["headroom_by_group"]:
        text += ["", "Headroom per group (QE-Rec given the true need's text - two-tower, GAUC, paired 95% CI):", "",
                 md_table(["group", "requests", "gain"], [[g, str(v["requests"]), diff_cell(v)]
                                                           for g, v in d["headroom_by_group"].items()])]
    if d["not_computed"]:
        text += ["", "Not computed here: " + "; ".join(d["not_computed"]) + "."]
    text += ["", "Plots: diagnose/auc_by_group.png" + (", diagnose/need_accuracy_by_group.png" if drift and d["group_by"] == "need" else "")
             + (", diagnose/winners_by_group.png" if d["winners"] else "") + "."]
    return "\n".join(text) + "\n"


def _verdict(cell: dict | None) -> str:
    return "–" if not cell or "agreement" not in cell else f"{_pct(cell['agreement'])} (n={cell['auc_moved']}/{cell['changed_requests']})"


def agreement_markdown(rows: list[dict]) -> list[str]:
    """Reward vs ranking: the expected-AUC yardstick (where the world has an oracle), then the old one."""
    text = []
    cells = [("valid", "anchor"), ("valid", "no_anchor"), ("test", "anchor"), ("test", "no_anchor")]
    if any("expected_auc" in a for a in rows):
        text += ["", "Reward vs ranking (QE-Rec frozen): on the requests where a stage's query names another intent than "
                 "the warm reasoner's (nearest intent text), how often the reward's verdict (better / worse) matches the "
                 "change of the request's *expected* AUC (the oracle's click probabilities as soft labels). Valid: the "
                 "run's valid sample, the reward as training uses it (target: own clicks + neighbours'); test: target "
                 "from the neighbours' clicks alone. n = requests whose expected AUC moved / whose named intent changed:", "",
                 md_table(["stage"] + [f"{s}, {'anchor' if v == 'anchor' else 'no anchor'}" for s, v in cells],
                          [[a["stage"]] + [_verdict(a["expected_auc"].get(s, {}).get(v)) for s, v in cells]
                           for a in rows if "expected_auc" in a and any("agreement" in c for x in a["expected_auc"].values()
                                                                      for c in x.values())])]
    text += ["", "Old yardstick (test requests, reward as configured): Spearman of a request's reward with its AUC on one "
             "sampled click, and on the requests whose query text changed at all, how often the reward's verdict matches "
             "that AUC's change (about 50% by construction: most changes reorder candidates the request does not want):", "",
             md_table(["stage", "mean reward", "Spearman (sampled click)", "changed requests", "verdicts agree (old)"],
                      [[a["stage"], _num(a["mean_reward"]), _num(a["spearman"], "{:+.3f}"),
                        str(a.get("old", {}).get("changed_requests", "–")),
                        _pct(a.get("old", {}).get("sign_agreement_sampled_click_any_change"))] for a in rows])]
    return text


def _bars(ax, groups, series: dict[str, list], title: str) -> None:
    width = 0.8 / max(len(series), 1)
    for i, (name, vals) in enumerate(series.items()):
        ax.bar([x + i * width for x in range(len(groups))], [v if v is not None else 0 for v in vals], width, label=name)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(groups))], groups)
    ax.set_title(title)
    ax.legend(fontsize=7)


def plots(d: dict, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in GROUPS if g in d["groups"]]
    stages = {s["stage"]: s for s in d["stages"]}
    base = stages.get("two_tower")
    fig, ax = plt.subplots(figsize=(7, 3.8))
    series = {k: [(s["auc"].get(g) or 0) - ((base["auc"].get(g) or 0) if base else 0) for g in groups]
              for k, s in stages.items() if k not in ("two_tower", "headroom", "oracle")}  # ceilings: another scale
    _bars(ax, groups, series, "request AUC - two-tower's, per group" if base else "request AUC per group")
    fig.tight_layout()
    fig.savefig(folder / "auc_by_group.png", dpi=110)
    plt.close(fig)
    need = {k: [s["need_accuracy"].get(g) for g in groups] for k, s in stages.items() if s.get("need_accuracy")}
    if need:
        fig, ax = plt.subplots(figsize=(7, 3.8))
        _bars(ax, groups, need, "need accuracy of the greedy test queries")
        fig.tight_layout()
        fig.savefig(folder / "need_accuracy_by_group.png", dpi=110)
        plt.close(fig)
    if d["winners"]:
        rnd = d["winners"][0]
        g_in = [g for g in groups if g in rnd["groups"]]
        fig, ax = plt.subplots(figsize=(7, 3.8))
        _bars(ax, g_in, {s: [rnd["groups"][g]["winner_share"][s] for g in g_in] for s in rnd["sources"]},
              f"Best-of-N winner share by source ({rnd['round']})")
        fig.tight_layout()
        fig.savefig(folder / "winners_by_group.png", dpi=110)
        plt.close(fig)


def write_diagnosis(run: Path, d: dict) -> None:
    folder = run / "diagnose"
    folder.mkdir(exist_ok=True)
    tmp = folder / "diagnose.json.tmp"
    tmp.write_text(json.dumps(d, indent=1))
    tmp.replace(folder / "diagnose.json")
    plots(d, folder)
    report = run / "report.md"
    text = report.read_text() if report.exists() else ""
    if MARK in text:
        text = text[: text.index(MARK)].rstrip("\n") + "\n"
    tmp = report.with_suffix(".md.tmp")
    tmp.write_text((text + "\n" if text else "") + markdown(d))
    tmp.replace(report)
