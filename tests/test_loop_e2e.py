"""The whole closed loop at toy size: world -> rankers -> reward -> RG-SFT -> aligner -> RG-CL -> calibration,
`rgalign compare`, and a run killed inside the alignment stage then resumed."""
import json
import math

import pytest

from rgalign_rl.compare import compare
from rgalign_rl.run import run
from rgalign_rl.world import load_world

from conftest import CONFIG
HEADLINE = ("gauc", "error_rate", "recall@3", "ndcg@3", "mrr")


def quiet(*a):
    pass


@pytest.fixture(scope="module")
def dpo_run(one_process_run):
    return one_process_run


def check_stage_metrics(stages):
    for s in stages:
        for k in HEADLINE:
            assert 0.0 <= s[k] <= 1.0 and math.isfinite(s[k]), (s["name"], k, s[k])
            lo, hi = s[f"{k}_ci"] if k != "error_rate" else s["error_rate_ci"]
            assert lo <= s[k] + 1e-9 and s[k] <= hi + 1e-9, (s["name"], k)


@pytest.mark.slow
def test_run_writes_metrics_report_plots_and_logs(dpo_run, tiny_world):
    out, metrics = dpo_run
    names = [s["name"] for s in metrics["stages"]]
    assert names == ["two_tower", "qe_rec", "rg_sft", "dpo", "rg_cl", "final", "control", "headroom", "oracle"]
    saved = json.loads((out / "metrics.json").read_text())
    assert [s["name"] for s in saved["stages"]] == names and {"config", "versions", "world"} <= set(saved)
    check_stage_metrics(saved["stages"])
    by = {s["name"]: s for s in saved["stages"]}
    for name in ("rg_sft", "dpo", "rg_cl", "final"):
        assert 0.0 <= by[name]["degenerate_share"] <= 1.0
        assert set(by[name]["need_accuracy"]) >= {"overall", "biased", "other"}
        d = by[name]["vs_qe_rec"]["gauc"]  # paired over the same users: the CI brackets the difference
        assert d["ci"][0] <= d["diff"] <= d["ci"][1]
        assert d["diff"] == pytest.approx(by[name]["gauc"] - by["qe_rec"]["gauc"], abs=1e-9)
    d = by["final"]["vs_control"]["gauc"]  # alignment's own share: final minus the same calibration unaligned
    assert d["ci"][0] <= d["diff"] <= d["ci"][1]
    assert d["diff"] == pytest.approx(by["final"]["gauc"] - by["control"]["gauc"], abs=1e-9)
    assert by["control"]["need_accuracy"] == by["qe_rec"]["need_accuracy"]  # the control serves the warm reasoner
    for name in ("headroom", "final"):  # the world's headroom beside the loop's own gain over the two-tower
        d = by[name]["vs_two_tower"]["gauc"]
        assert d["diff"] == pytest.approx(by[name]["gauc"] - by["two_tower"]["gauc"], abs=1e-9)
    assert "need_accuracy" not in by["headroom"]  # no reasoner: it reads the oracle's need text
    assert isinstance(by["rg_cl"]["rolled_back"], bool) and by["rg_cl"]["steps"] > 0  # checked like every stage
    groups = by["qe_rec"]["vs_two_tower_by_group"]  # where QE-Rec gains over the two-tower, per need group
    assert set(groups) <= {"cold", "rare", "mid", "frequent"} and groups
    assert sum(g["requests"] for g in groups.values()) == len(load_world(tiny_world).indices("test"))
    cuts = by["qe_rec"]["need_group_cuts"]  # need groups cut relative to the world: quantiles of its needs' counts
    assert cuts["cuts"][0] <= cuts["cuts"][1] and sum(cuts["needs"].values()) > 0
    for name in ("qe_rec", "control", "headroom", "final"):  # ranker stages: kept its start = no epoch beat epoch 0
        assert isinstance(by[name]["kept_start"], bool) and (by[name]["kept_start"] == ("kept_start_reason" in by[name]))
    for name in ("rg_sft", "dpo", "rg_cl"):  # reasoner stages: kept its start = rolled back
        assert by[name]["kept_start"] == by[name]["rolled_back"]
    from rgalign_rl.report import paired_plot_data  # stages.png plots exactly metrics.json's paired differences

    plotted = paired_plot_data(saved["stages"])
    assert {(e["stage"], e["vs"]) for e in plotted} >= {("final", "vs_control"), ("headroom", "vs_two_tower"),
                                                        ("qe_rec", "vs_two_tower"), ("dpo", "vs_qe_rec")}
    assert all(e["diff"] == by[e["stage"]][e["vs"]][e["metric"]]["diff"]
               and e["ci"] == by[e["stage"]][e["vs"]][e["metric"]]["ci"] for e in plotted)
    assert by["dpo"]["kl_to_ref"] >= -0.5 and 0 < by["dpo"]["reward_calls"] <= 240  # the YAML's reward_budget
    curve = by["dpo"]["curve"]
    assert curve[0]["step"] == 0 and len(curve) >= 2 and all(math.isfinite(p["reward"]) for p in curve)
    report = (out / "report.md").read_text()
    assert "| final |" in report and "| control |" in report and "Final vs control" in report
    assert "| headroom |" in report and "World headroom" in report and "| need group |" in report
    assert "Reproduce" in report and "atlas" in report
    assert "| kept its start |" in report and f"<= {cuts['cuts'][0]}," in report and "< 200" not in report
    if by["headroom"]["kept_start"]:
        assert "The headroom ranker kept its two-tower start" in report
    for png in ("stages.png", "aligner_reward.png", "aligner_kl.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    stages_logged = {json.loads(line).get("stage") for line in (out / "log.jsonl").read_text().splitlines()}
    assert {"two_tower", "headroom", "control", "round1/dpo", "round1/calibrate"} <= stages_logged
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert not list(out.glob("**/checkpoint-*"))  # finished stages leave no trainer checkpoints behind
    with pytest.raises(SystemExit, match="--resume"):
        run(CONFIG, str(tiny_world), str(out), log=quiet)


@pytest.mark.slow(seconds=90)
def test_compare_two_aligners_from_one_rg_sft_checkpoint_on_each_seeds_own_world(tmp_path):
    """`rgalign compare` without --world: each seed generates its own world; per seed, both aligners start from
    the same RG-SFT checkpoint, see the same QE-Rec and share one control; the verdict pairs over each seed's users."""
    out = tmp_path / "cmp"
    # half the tiny world's requests and a shorter warm start (2 epochs, not 6): this test is about what compare
    # shares and pairs, not what it learns
    summary = compare(CONFIG, ["dpo", "ppo"], [0, 1], str(out), None,
                      overrides=["reasoner.warm.epochs=2", "shopsim.requests_per_user=2.5"], log=quiet)
    assert set(summary["algos"]) == {"dpo", "ppo"} and summary["reward_budget"] == 240
    worlds = summary["worlds"]
    assert set(worlds) == {0, 1} and worlds[0] != worlds[1]
    assert all(str(out / f"seed{s}") in worlds[s] for s in (0, 1))  # generated per seed, with that seed
    for s in (0, 1):
        for algo in ("dpo", "ppo"):
            m = json.loads((out / f"seed{s}" / algo / "metrics.json").read_text())
            check_stage_metrics(m["stages"])
            assert [x["name"] for x in m["stages"]] == ["two_tower", "qe_rec", "rg_sft", algo, "rg_cl", "final",
                                                        "control", "headroom", "oracle"]
            assert m["world"] == worlds[s] and m["seeds"]["seed"] == s and m["seeds"]["ranker.train.seed"] == s
        for name in ("rg_sft", "control", "headroom"):
            st = [next(x for x in json.loads((out / f"seed{s}" / a / "metrics.json").read_text())["stages"]
                       if x["name"] == name) for a in ("dpo", "ppo")]
            assert st[0].get("path") == st[1].get("path") and st[0]["gauc"] == st[1]["gauc"]
    for algo in ("dpo", "ppo"):
        row = summary["algos"][algo]
        assert 0 < row["reward_calls"][0] <= 240 and math.isfinite(row["gauc"][0])  # [mean, std] over the seeds
    # the paired differences of each seed are over that seed's own test users
    assert [d["seed"] for d in summary["paired_vs_best"][summary["ranking"][1]]] == [0, 1]
    report = (out / "report.md").read_text()
    assert "| dpo |" in report and "| ppo |" in report and "Verdict" in report
    assert summary["ranking"][0] in report.split("## Verdict")[1] and "The control" in summary["verdict"]
    for png in ("reward_vs_step.png", "kl_vs_step.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
