"""report.md and stages.png from a hand-made metrics dict (no training): the picture plots metrics.json's
paired differences exactly, stages that kept their start are marked, need groups are cut relative to the
world (issue 31)."""
import json
from types import SimpleNamespace

import numpy as np
import pytest

from rgalign_rl.align.diagnostics import count_cuts, count_groups, need_group_cuts, need_groups
from rgalign_rl.align.evaluate import _stage_kept_start, kept_start, ranker_kept_start
from rgalign_rl.report import paired_plot_data, plot_paired, write_run_report

PNG = b"\x89PNG"


def _d(diff: float, half: float = 0.004) -> dict:
    return {"diff": diff, "ci": [diff - half, diff + half]}


def _versus(gauc: float, recall: float, expected: float | None = None) -> dict:
    out = {"gauc": _d(gauc), "recall@3": _d(recall, 0.01)}
    if expected is not None:
        out["expected_gauc"] = _d(expected, 0.002)
    return out


def _row(name: str, gauc: float, **extra) -> dict:
    row = {"name": name, "gauc": gauc, "gauc_ci": [gauc - 0.015, gauc + 0.015], "error_rate": 1 - gauc,
           "error_rate_ci": [0.3, 0.4], "recall@3": 0.5, "recall@3_ci": [0.49, 0.51], "ndcg@3": 0.4,
           "ndcg@3_ci": [0.39, 0.41], "mrr": 0.45, "mrr_ci": [0.44, 0.46], "expected_gauc": gauc + 0.01,
           "expected_gauc_ci": [gauc, gauc + 0.02]}
    return {**row, **extra}


def fake_metrics(world: str) -> dict:
    kept = "no training epoch beat its two-tower start on valid GAUC"
    stages = [
        _row("two_tower", 0.650, vs_qe_rec=_versus(-0.010, -0.005, -0.008)),
        _row("qe_rec", 0.660, vs_two_tower=_versus(0.010, 0.005, 0.008), kept_start=False,
             vs_two_tower_by_group={"cold": {"requests": 40, **_d(0.02)}, "rare": {"requests": 50, **_d(0.01)},
                                    "mid": {"requests": 60, **_d(0.0)}, "frequent": {"requests": 70, **_d(-0.001)}},
             need_group_cuts={"quantiles": [1 / 3, 2 / 3], "cuts": [20, 40], "needs": {"cold": 2, "rare": 2, "mid": 2,
                                                                                       "frequent": 2}}),
        _row("rg_sft", 0.664, vs_qe_rec=_versus(0.004, 0.002, 0.003), rolled_back=False, kept_start=False,
             valid_reward=0.6, wall_s=3.0),
        _row("dpo", 0.660, vs_qe_rec=_versus(0.0, 0.0, 0.0), rolled_back=True, kept_start=True,
             kept_start_reason="rolled back to its starting reasoner (degenerate queries or a valid-reward drop)",
             valid_reward=0.5, wall_s=4.0),
        _row("final", 0.668, vs_qe_rec=_versus(0.008, 0.004, 0.006), vs_control=_versus(0.008, 0.004, 0.006),
             vs_two_tower=_versus(0.018, 0.009, 0.014), kept_start=False, wall_s=2.0),
        _row("control", 0.660, vs_qe_rec=_versus(0.0, 0.0, 0.0), kept_start=True,
             kept_start_reason="no calibration epoch beat QE-Rec, its start, on valid GAUC", wall_s=2.0),
        _row("headroom", 0.650, vs_qe_rec=_versus(-0.010, -0.005, -0.008), vs_two_tower=_versus(0.0, 0.0, 0.0),
             kept_start=True, kept_start_reason=kept, wall_s=1.0),
        _row("oracle", 0.700, vs_qe_rec=_versus(0.040, 0.02, 0.05)),
    ]
    return {"stages": stages, "world": world, "versions": {"torch": "x"},
            "config": {"seed": 0, "reasoner": {"preset": "tiny"}, "align": {"algorithm": "dpo"},
                       "reward": {"name": "listwise"}, "rounds": 1}}


def test_plot_data_is_exactly_the_metrics_paired_differences():
    rows = fake_metrics("w")["stages"]
    data = paired_plot_data(rows)
    by = {r["name"]: r for r in rows}
    expected = {("qe_rec", "vs_two_tower"), ("rg_sft", "vs_qe_rec"), ("dpo", "vs_qe_rec"), ("final", "vs_qe_rec"),
                ("final", "vs_control"), ("control", "vs_qe_rec"), ("headroom", "vs_two_tower")}
    assert {(e["stage"], e["vs"]) for e in data} == expected  # the reference a reader compares each stage with
    for e in data:
        d = by[e["stage"]][e["vs"]][e["metric"]]
        assert e["diff"] == d["diff"] and e["ci"] == d["ci"]
        assert e["kept_start"] == bool(by[e["stage"]].get("kept_start"))
    assert len(data) == 3 * len(expected)  # gauc, recall@3 and the expected GAUC (the world has an oracle)
    assert {e["stage"] for e in data if e["kept_start"]} == {"dpo", "control", "headroom"}


def test_run_report_marks_kept_start_and_draws_paired_plot(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    world = tmp_path / "world"  # no world.json: the teachers section says so
    world.mkdir()
    metrics = fake_metrics(str(world))
    path = write_run_report(out, metrics, "rgalign run --config x.yaml")
    for png in ("stages.png", "aligner_reward.png", "aligner_kl.png"):
        assert (out / png).read_bytes()[:4] == PNG
    text = path.read_text()
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("| stage | GAUC"))  # the results table
    table = lines[head : lines.index("", head)]
    row = {line.split(" | ")[0][2:]: line for line in table[2:]}
    assert table[0].rstrip().endswith("| kept its start |")
    assert row["headroom"].rstrip().endswith("| **yes** |") and row["control"].rstrip().endswith("| **yes** |")
    assert row["dpo"].rstrip().endswith("| **yes** |") and row["final"].rstrip().endswith("| no |")
    assert row["two_tower"].rstrip().endswith("| – |")
    assert "The headroom ranker kept its two-tower start" in text and "+0.0000 is not a measurement" in text
    assert "The control kept its QE-Rec start (no calibration epoch beat it" in text
    assert "<= 20, 21-40, > 40 training requests" in text and "< 200" not in text


def test_plot_paired_draws_without_levels_or_entries(tmp_path):
    plot_paired([], tmp_path / "empty.png")
    entries = paired_plot_data(fake_metrics("w")["stages"])
    plot_paired(entries, tmp_path / "p.png", title="t")
    assert (tmp_path / "empty.png").read_bytes()[:4] == PNG and (tmp_path / "p.png").read_bytes()[:4] == PNG


def test_quantile_need_groups_on_hand_made_counts():
    counts = np.array([60, 10, 40, 20, 50, 30])
    assert count_cuts(counts) == (20, 40)  # actual counts: the 1/3 and 2/3 quantiles, no interpolation
    groups = count_groups(counts, (20, 40))
    assert list(groups) == ["frequent", "rare", "mid", "rare", "frequent", "mid"]
    assert list(count_groups([20, 21, 40, 41], (20, 40))) == ["rare", "mid", "mid", "frequent"]  # ties fall low
    assert count_cuts([]) == (0, 0)


def _fake_world(train_needs: list[str], test_needs: list[str], cold: list[str]):
    need = np.array(train_needs + test_needs, dtype=object)
    split = {"train": np.arange(len(train_needs)), "test": np.arange(len(train_needs), len(need))}
    oracle = SimpleNamespace(field_of_samples=lambda field: need)
    return SimpleNamespace(has_needs=True, meta={"cold_intents": cold}, oracle=oracle, indices=split.__getitem__)


def test_need_groups_are_cut_relative_to_the_world():
    # six warm needs with 1..6 training requests (a small world: none reaches the old 200 threshold), one cold
    train = [f"n{k}" for k in range(1, 7) for _ in range(k)] + ["c"]
    world = _fake_world(train, ["n1", "n2", "n3", "n4", "n5", "n6", "c"], ["c"])
    cuts = need_group_cuts(world)
    assert cuts["cuts"] == [2, 4] and cuts["needs"] == {"cold": 1, "rare": 2, "mid": 2, "frequent": 2}
    groups = need_groups(world, world.indices("test"))
    assert list(groups) == ["rare", "rare", "mid", "mid", "frequent", "frequent", "cold"]
    assert need_groups(SimpleNamespace(has_needs=False), [0]) is None


def _ranker(path, history, **extra):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"history": history, **extra}))
    return str(path)


def test_kept_start_from_ranker_history(tmp_path):
    h = lambda *v: [{"epoch": i, "valid_gauc": x} for i, x in enumerate(v)]  # noqa: E731
    assert kept_start(h(0.70, 0.70, 0.69)) is True  # a tie does not beat the start
    assert kept_start(h(0.70, 0.69, 0.71)) is False
    assert kept_start([{"epoch": 1, "valid_gauc": 0.6}]) is None and kept_start(None) is None  # no start to keep
    qe = _ranker(tmp_path / "qe", h(0.60, 0.65))  # trained past its start: not part of the control's chain
    r1 = _ranker(tmp_path / "c1", h(0.65, 0.64), calibrated_from=qe)
    r2 = _ranker(tmp_path / "c2", h(0.65, 0.65), calibrated_from=r1)
    assert ranker_kept_start(qe) is False and ranker_kept_start(r2, chain=True) is True
    r3 = _ranker(tmp_path / "c3", h(0.65, 0.66), calibrated_from=r2)
    assert ranker_kept_start(r3, chain=True) is False and ranker_kept_start(r2) is True
    assert _stage_kept_start({"name": "control", "key": "control", "path": r2}) == (
        True, "no calibration epoch beat QE-Rec, its start, on valid GAUC")
    assert _stage_kept_start({"name": "final", "key": "round1/calibrate", "path": r3}) == (False, "")
    assert _stage_kept_start({"name": "headroom", "key": "headroom", "history": h(0.6, 0.59)})[0] is True
    assert _stage_kept_start({"name": "dpo", "key": "round1/dpo", "rolled_back": True, "fault": "F: x"}) == (
        True, "rolled back to its starting reasoner (F: x)")
    assert _stage_kept_start({"name": "two_tower"}) == (None, "")


@pytest.mark.parametrize("cuts, text", [(None, "< 200, 200-999, >= 1000"),
                                        ({"cuts": [3, 3], "needs": {}}, "<= 3, none (the cuts tie), > 3")])
def test_group_cuts_text(cuts, text):
    from rgalign_rl.report import group_cuts_text

    assert text in group_cuts_text(cuts)


def test_compare_plot_data_reads_each_runs_paired_differences(tmp_path):
    from rgalign_rl.compare import compare_plot_data, write_compare_report

    runs = {}
    for seed in (0, 1):
        for algo in ("dpo", "ppo"):
            m = fake_metrics("w")
            (tmp_path / f"seed{seed}" / algo).mkdir(parents=True)
            (tmp_path / f"seed{seed}" / algo / "metrics.json").write_text(json.dumps(m))
            runs[(seed, algo)] = next(s for s in m["stages"] if s["name"] == "final")
    summary = {"seeds": [0, 1], "ranking": ["dpo", "ppo"], "reward_budget": 240, "table": "t", "verdict": "v",
               "command": "rgalign compare", "algos": {a: {"seeds": [{"seed": s, "curve": []} for s in (0, 1)]}
                                                       for a in ("dpo", "ppo")},
               "paired_vs_best": {"ppo": [{"seed": s, **_d(-0.002 * (s + 1))} for s in (0, 1)]}}
    data = compare_plot_data(tmp_path, summary)
    for e in data:
        if e["vs"] == "vs_best":
            d = summary["paired_vs_best"]["ppo"][int(e["stage"][-2])]
        else:
            d = runs[(int(e["stage"][-2]), e["stage"].split()[0])][e["vs"]][e["metric"]]
        assert e["diff"] == d["diff"] and e["ci"] == d["ci"]
    assert len(data) == 2 * 2 * 2 * 3 + 2  # (algo, seed, QE-Rec/control, 3 metrics) + ppo vs dpo per seed
    report = write_compare_report(tmp_path, summary)
    assert (tmp_path / "final_paired.png").read_bytes()[:4] == PNG and "final_paired.png" in report.read_text()
