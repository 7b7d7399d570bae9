"""`rgalign diagnose`: per group and per stage, why a finished run did or did not move the ranking."""
import contextlib
import io
import json
import shutil

import numpy as np
import pytest

from rgalign_rl.cli import main
from rgalign_rl.diagnose import (expected_request_auc, intent_changed, intent_groups, named_intents, request_auc,
                                 verdicts)
from rgalign_rl.world import load_world


def diagnose_json(run) -> dict:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["diagnose", str(run), "--json"]) == 0
    return json.loads(buf.getvalue())


def test_need_ranks_and_the_need_accuracy_where_the_two_tower_misses_by_hand(tiny_world):
    """The rank of the true need's intent among a request's candidates, from scores set by hand: the need lifted to
    the top ranks 1, sunk to the bottom ranks as many as the request has candidates, tied with the top candidate
    ranks 2 (a tie counts against it), and a request whose need is not a candidate gets 0. need_accuracy's
    "two_tower_misses" is the accuracy on the requests ranked below first."""
    from rgalign_rl.align.diagnostics import need_accuracy, need_hits, need_intents, need_ranks

    world = load_world(tiny_world)
    pos = {it["intent_id"]: j for j, it in enumerate(world.intents)}
    test = world.indices("test")
    need = np.array([pos[x] for x in need_intents(world)[test]])
    named = ((world.candidates[0][test] == need[:, None]) & world.candidates[1][test]).any(1)
    assert named.sum() >= 30 and (~named).sum() >= 1
    idx = np.concatenate([test[named][:30], test[~named][:3]])
    cand, mask = world.candidates[0][idx], world.candidates[1][idx]
    is_need = (cand == np.array([pos[x] for x in need_intents(world)[idx]])[:, None]) & mask
    scores = np.tile(np.arange(cand.shape[1], 0, -1, dtype=np.float32), (len(idx), 1))  # candidate c: rank c + 1
    expected = np.zeros(len(idx), int)
    for r in range(30):
        if r % 3 == 0:
            scores[r][is_need[r]], expected[r] = 100.0, 1
        elif r % 3 == 1:
            scores[r][is_need[r]], expected[r] = -100.0, mask[r].sum()
        else:
            scores[r][is_need[r]] = scores[r][~is_need[r] & mask[r]].max()
            expected[r] = 2
    np.testing.assert_array_equal(need_ranks(world, idx, scores), expected)
    needs = [(world.oracle.needs_of(i) or [""])[0] for i in idx]
    queries = [n if r % 2 else "zzz" for r, n in enumerate(needs)]  # every other query names its need exactly
    hits, room = need_hits(world, idx, queries), expected > 1
    assert hits[1::2].all() and room.sum() == 20
    acc = need_accuracy(world, idx, queries, room)
    assert acc["overall"] == pytest.approx(hits.mean()) and acc["two_tower_misses"] == pytest.approx(hits[room].mean())
    assert "two_tower_misses" not in need_accuracy(world, idx, queries)


def test_request_auc_by_hand():
    scores = np.array([[0.9, 0.1, 0.5], [0.1, 0.9, 0.5], [0.3, 0.3, 0.0], [0.2, 0.1, 0.0], [0.5, 0.4, 0.9]])
    labels = np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 0, 0], [1, 0, 0]], float)
    mask = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 0]], bool)  # the last: 0.9 is padding
    auc = request_auc(scores, labels, mask)
    assert auc[:3].tolist() == [1.0, 0.0, 0.75]  # a tie counts half: (0.5 + 1) / 2
    assert np.isnan(auc[3]) and auc[4] == 1.0


def test_expected_request_auc_by_hand():
    scores = np.array([[0.9, 0.1, 0.5], [0.3, 0.3, 0.0], [0.2, 0.1, 0.0], [0.5, 0.4, 0.9]])
    probs = np.array([[0.8, 0.2, 0.5], [0.5, 0.0, 0.0], [0.0, 0.0, 0.0], [0.6, 0.1, 0.0]])
    mask = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 0]], bool)  # the last: 0.9 is padding
    auc = expected_request_auc(scores, probs, mask)
    # row 0, pairs a != b weighted p_a (1 - p_b): won .64 (0>1) + .40 (0>2) + .40 (2>1) of 1.68 in all
    assert auc[0] == pytest.approx(1.44 / 1.68)
    assert auc[1] == pytest.approx(0.75)  # .5 x 1 tied (half) and .5 x 1 won, of 1.0
    assert np.isnan(auc[2])  # no probability: no pair carries weight
    assert auc[3] == pytest.approx((0.6 * 0.9) / (0.6 * 0.9 + 0.1 * 0.4))  # padding is not a candidate


def test_expected_request_auc_with_0_1_probabilities_is_request_auc():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, (50, 6)).astype(float)  # ties on purpose
    labels = (rng.random((50, 6)) < 0.3).astype(float)
    mask = rng.random((50, 6)) < 0.8
    a, b = expected_request_auc(scores, labels, mask), request_auc(scores, labels, mask)
    assert np.array_equal(np.isnan(a), np.isnan(b)) and np.allclose(a[~np.isnan(a)], b[~np.isnan(b)])


def _encoder(vectors: dict):
    """A stand-in text encoder: hand-made unit vectors per text; records what it was asked to encode."""
    calls = []

    def encode(texts, cache=True):
        calls.append(list(texts))
        v = np.array([vectors[t] for t in texts], float)
        return v / np.linalg.norm(v, axis=1, keepdims=True)
    return encode, calls


def test_intent_changed_counts_a_new_named_intent_not_a_rewording():
    intents = np.eye(3)  # shoes, hats, scarves
    encode, calls = _encoder({"red shoes": [1, 0, 0], "crimson sneakers": [0.9, 0.1, 0], "blue hat": [0, 1, 0],
                              "wool scarf": [0, 0, 1], "warm hat": [0, 0.8, 0.6], "red shoe hat": [0.2, 0.9, 0.1]})
    base = ["red shoes", "blue hat", "wool scarf", "red shoes"]
    stage = ["crimson sneakers", "blue hat", "warm hat", "red shoe hat"]
    assert named_intents(stage, intents, encode).tolist() == [0, 1, 1, 1]
    # a rewording naming the same intent, the same text, another intent twice
    assert intent_changed(stage, base, intents, encode).tolist() == [False, False, True, True]
    assert sorted(calls[-1]) == sorted(set(stage + base))  # each text encoded once
    assert intent_changed([], [], intents, encode).tolist() == []


def test_verdicts_skip_unchanged_undefined_and_unmoved_requests():
    d_reward = np.array([0.1, -0.2, 0.3, 0.0, 0.5, -0.4])
    d_auc = np.array([0.2, 0.1, 0.0, -0.1, np.nan, -0.3])
    changed = np.array([True, True, True, True, True, False])
    # compared: 0 (agree), 1 (disagree), 3 (a reward tie has no sign: disagree); 2 did not move, 4 undefined, 5 unchanged
    # weighted by |AUC change|: 0.2 agrees, 0.1 and 0.1 do not
    assert verdicts(d_reward, d_auc, changed) == {"changed_requests": 4, "auc_moved": 3, "agreement": pytest.approx(1 / 3),
                                                 "weighted_agreement": pytest.approx(0.2 / 0.4)}
    flips = np.array([True, False, False, True, False, False])  # the change named the true need, or stopped
    got = verdicts(d_reward, d_auc, changed, flips)
    assert got["need_flip_requests"] == 2 and got["need_flip_agreement"] == pytest.approx(0.5)
    none = verdicts(d_reward, d_auc, np.zeros(6, bool))
    assert none["agreement"] is None and none["weighted_agreement"] is None


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
    metrics_json = json.loads((run / "metrics.json").read_text())
    metrics, metrics_cfg = {s["name"]: s for s in metrics_json["stages"]}, metrics_json["config"]
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
    assert "old" not in agree["qe_rec"]  # the warm reasoner is what the others are compared with
    n_test, n_valid = len(world.indices("test")), min(metrics_cfg["eval"]["max_valid"], len(world.indices("valid")))
    for split in ("valid", "test"):
        for variant in ("anchor", "no_anchor"):
            assert "changed_requests" not in agree["qe_rec"]["expected_auc"][split][variant]
    for k in ("round1/rg_sft", "round1/dpo", "round1/rg_cl"):
        old = agree[k]["old"]  # changed: the query and the request's sampled-click AUC moved
        assert old["changed_requests"] <= round(by[k]["queries_changed"] * n_test)
        agreement = old["sign_agreement_sampled_click_any_change"]
        assert agreement is None or 0 <= agreement <= 1
        for split, n in (("valid", n_valid), ("test", round(by[k]["queries_changed"] * n_test))):
            for variant in ("anchor", "no_anchor"):  # a named intent changes only where the text did
                cell = agree[k]["expected_auc"][split][variant]
                assert cell["auc_moved"] <= cell["changed_requests"] <= n
                assert cell["agreement"] is None or 0 <= cell["agreement"] <= 1
    text = (run / "report.md").read_text()
    assert "expected* AUC" in text and "Old yardstick" in text
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
    assert d["reward_agreement"] and all("expected_auc" not in a for a in d["reward_agreement"])  # no oracle
    assert any("expected request AUC" in m and "no oracle" in m for m in d["not_computed"])
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


def test_diagnose_refuses_a_folder_that_is_not_a_finished_run(tmp_path, capsys):
    assert main(["diagnose", str(tmp_path)]) == 2  # an input error: one line, no traceback (cli.main)
    assert "metrics.json not found" in capsys.readouterr().err
