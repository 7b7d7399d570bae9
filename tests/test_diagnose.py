"""`rgalign diagnose`: per group and per stage, why a finished run did or did not move the ranking."""
import contextlib
import io
import json
import shutil

import numpy as np
import pytest

from rgalign_rl.cli import main
from rgalign_rl.diagnose import intent_groups, request_auc
from rgalign_rl.world import load_world


def diagnose_json(run) -> dict:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["diagnose", str(run), "--json"]) == 0
    return json.loads(buf.getvalue())


def test_request_auc_by_hand():
    scores = np.array([[0.9, 0.1, 0.5], [0.1, 0.9, 0.5], [0.3, 0.3, 0.0], [0.2, 0.1, 0.0], [0.5, 0.4, 0.9]])
    labels = np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 0, 0], [1, 0, 0]], float)
    mask = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 0]], bool)  # the last: 0.9 is padding
    auc = request_auc(scores, labels, mask)
    assert auc[:3].tolist() == [1.0, 0.0, 0.75]  # a tie counts half: (0.5 + 1) / 2
    assert np.isnan(auc[3]) and auc[4] == 1.0


@pytest.mark.slow
def test_diagnose_json_on_a_finished_tiny_run(one_process_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(one_process_run[0], run)  # its state.json still points at the original snapshots
    d = diagnose_json(run)
    assert d["group_by"] == "need" and set(d["groups"]) <= {"cold", "rare", "mid", "frequent"}
    world = load_world(d["world"])
    assert sum(d["groups"].values()) == len(world.indices("test"))
    by = {s["stage"]: s for s in d["stages"]}
    assert list(by)[0] == "two_tower" and list(by)[-1] == "oracle"  # in the order the run finished them
    assert {"headroom", "qe_rec", "round1/rg_sft", "round1/dpo", "round1/rg_cl", "control", "round1/calibrate"} <= set(by)
    for s in d["stages"]:
        assert all(0.0 <= v <= 1.0 for v in s["auc"].values() if v is not None)
    assert "need_accuracy" not in by["two_tower"] and "need_accuracy" not in by["headroom"]  # no reasoner
    assert by["qe_rec"]["queries_changed"] == 0.0 and 0.0 <= by["round1/dpo"]["queries_changed"] <= 1.0
    assert by["control"]["need_accuracy"] == by["qe_rec"]["need_accuracy"]  # the control serves the warm reasoner
    metrics = {s["name"]: s for s in json.loads((run / "metrics.json").read_text())["stages"]}
    assert by["qe_rec"]["need_accuracy"].keys() == d["groups"].keys()
    overall = sum(by["qe_rec"]["need_accuracy"][g] * n for g, n in d["groups"].items()) / sum(d["groups"].values())
    assert overall == pytest.approx(metrics["qe_rec"]["need_accuracy"]["overall"], abs=1e-9)  # same queries, same rule
    (rnd,) = d["winners"]
    assert rnd["round"] == "round1" and "reasoner" in rnd["sources"]
    for cell in rnd["groups"].values():
        assert sum(cell["winner_share"].values()) == pytest.approx(1.0)
        acc = cell["need_accuracy"]
        assert acc["winner"] <= acc["any"]  # a source's share is over the requests it wrote for: no such bound
        assert all(0 <= acc[s] <= 1 for s in rnd["sources"] if acc[s] is not None)
    agree = {a["stage"]: a for a in d["reward_agreement"]}
    assert set(agree) == {"qe_rec", "round1/rg_sft", "round1/dpo", "round1/rg_cl"}
    assert agree["qe_rec"]["mean_reward"] > 0  # test requests get their neighbours' clicks as the target
    assert "changed_requests" not in agree["qe_rec"]  # the warm reasoner is what the others are compared with
    for k in ("round1/rg_sft", "round1/dpo", "round1/rg_cl"):  # changed: the query and the request's AUC moved
        assert agree[k]["changed_requests"] <= round(by[k]["queries_changed"] * len(world.indices("test")))
        assert agree[k]["sign_agreement"] is None or 0 <= agree[k]["sign_agreement"] <= 1
    assert set(d["headroom_by_group"]) == set(d["groups"])
    assert not d["not_computed"]
    assert {p.name for p in (run / "diagnose").iterdir()} == {
        "diagnose.json", "auc_by_group.png", "need_accuracy_by_group.png", "winners_by_group.png"}
    diagnose_json(run)  # twice: one Diagnosis section in report.md
    assert (run / "report.md").read_text().count("## Diagnosis") == 1


@pytest.mark.slow
def test_diagnose_on_a_world_without_needs_groups_by_intent_clicks_and_says_what_it_cannot_compute(
        one_process_run, tiny_world, tmp_path):
    world_dir = tmp_path / "world"
    shutil.copytree(tiny_world, world_dir, ignore=shutil.ignore_patterns("oracle.jsonl"))
    run = tmp_path / "run"
    shutil.copytree(one_process_run[0], run)
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**metrics, "world": str(world_dir)}))
    (run / "scores" / "headroom.npy").unlink()
    d = diagnose_json(run)
    assert d["group_by"] == "intent" and d["headroom_by_group"] is None
    assert all(s.get("need_accuracy") is None for s in d["stages"])
    assert all("need_accuracy" not in c for c in d["winners"][0]["groups"].values())
    assert any("need accuracy" in m and "no needs" in m for m in d["not_computed"])
    assert any("headroom" in m for m in d["not_computed"])
    assert "Not computed here" in (run / "report.md").read_text()


def test_intent_groups_follow_training_clicks(tiny_world):
    world = load_world(tiny_world)
    test = world.indices("test")
    groups = intent_groups(world, test)
    ids, labels = world.candidates[0], world.labels
    train = world.indices("train")
    counts = np.bincount(ids[train][labels[train] > 0], minlength=len(world.intents))
    clicked = labels[test].any(1)
    n = counts[ids[test, labels[test].argmax(1)]]
    assert (groups[~clicked] == "unclicked").all() and (n[groups == "cold"] == 0).all()
    order = ["rare", "mid", "frequent"]
    for lo, hi in zip(order, order[1:]):  # every request of a lower group has fewer training clicks
        if (groups == lo).any() and (groups == hi).any():
            assert n[groups == lo].max() < n[groups == hi].min()


def test_diagnose_refuses_a_folder_that_is_not_a_finished_run(tmp_path):
    with pytest.raises(SystemExit, match="metrics.json not found"):
        main(["diagnose", str(tmp_path)])
