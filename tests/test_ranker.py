import subprocess
import sys

import numpy as np
import pytest
import torch

from rgalign_rl.ranker.model import SCALE_GAIN, RankerConfig, build_ranker
from rgalign_rl.ranker.queries import query_embeddings
from rgalign_rl.ranker.train import (RankerData, TrainConfig, listnet_kl_loss, load_ranker, score, split_gauc,
                                     train_ranker)
from rgalign_rl.text_encoder import encode_texts
from rgalign_rl.world import load_world
from rgalign_rl.world.stats import split_metrics


def test_listnet_and_kl_invariants():
    labels = torch.tensor([[1.0, 0, 0], [0, 0, 0]])
    mask = torch.ones(2, 3, dtype=torch.bool)
    good, bad = torch.tensor([[5.0, 0, 0], [1, 2, 3]]), torch.tensor([[0.0, 5, 0], [1, 2, 3]])
    assert listnet_kl_loss(good, labels, mask) < listnet_kl_loss(bad, labels, mask)
    # uniform scores: ListNet = ln 3 on the clicked request; a request without clicks adds nothing
    assert torch.isclose(listnet_kl_loss(torch.zeros(2, 3), labels, mask), torch.log(torch.tensor(3.0)))
    # KL to itself is zero
    base = listnet_kl_loss(good, labels, mask)
    assert torch.isclose(listnet_kl_loss(good, labels, mask, good, kl_weight=1.0), base, atol=1e-6)
    assert listnet_kl_loss(good, labels, mask, bad, kl_weight=1.0) > base


def test_qe_rec_with_the_true_need_beats_two_tower_and_reloads(tiny_world, tiny_ranker):
    world = load_world(tiny_world)
    tt, enc, _ = train_ranker(world, "two_tower", None, TrainConfig(epochs=6), log=lambda *a: None)
    need = query_embeddings(world, "need")
    qe, enc2, _ = train_ranker(world, "qe_rec", need, TrainConfig(epochs=6), log=lambda *a: None)
    all_idx = np.arange(len(world.samples))
    g_tt = split_metrics(world, score(tt, RankerData(world, enc), all_idx))["gauc"]
    g_qe = split_metrics(world, score(qe, RankerData(world, enc2, need), all_idx))["gauc"]
    assert g_qe > g_tt + 0.03
    model, enc3, meta = load_ranker(tiny_ranker)
    q = query_embeddings(world, meta["queries"])
    s1 = score(model, RankerData(world, enc3, q), all_idx[:50])
    model2, enc4, _ = load_ranker(tiny_ranker)
    np.testing.assert_array_equal(s1, score(model2, RankerData(world, enc4, q), all_idx[:50]))


def test_ranker_train_refuses_a_bad_world_before_writing(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "intents.jsonl").write_text('{"intent_id": "a", "text": "x"}\n')
    (tmp_path / "bad" / "samples.jsonl").write_text('{"sample_id": "s", "user_id": "u", "timestamp": 1, '
                                                    '"features": {}, "clicked": ["nope"]}\n')
    out = tmp_path / "ranker"
    r = subprocess.run([sys.executable, "-m", "rgalign_rl.cli", "ranker", "train", "--world", str(tmp_path / "bad"),
                        "--arch", "two_tower", "--out", str(out)], capture_output=True, text=True)
    assert r.returncode != 0
    assert "samples.jsonl:1: clicked: unknown intent id 'nope'" in r.stderr
    assert not out.exists()


def test_ranker_train_nests_a_gated_qe_rec_in_a_saved_two_tower(tiny_world, tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "rgalign_rl.cli", "ranker", *args], capture_output=True, text=True)

    assert cli("train", "--world", str(tiny_world), "--arch", "two_tower", "--epochs", "2", "--out", str(tmp_path / "tt")).returncode == 0
    r = cli("train", "--world", str(tiny_world), "--queries", "teacher:atlas", "--nest", str(tmp_path / "tt"),
            "--epochs", "2", "--out", str(tmp_path / "qe"))
    assert r.returncode == 0, r.stderr[-1500:]
    model, _, meta = load_ranker(tmp_path / "qe")
    tt, _, _ = load_ranker(tmp_path / "tt")
    assert model.cfg.arch == "qe_rec_gated" and model.cfg.query_text == 384 and meta["nested_in"] == str(tmp_path / "tt")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in tt.state_dict().items())  # its towers: the two-tower's
    r = cli("train", "--world", str(tiny_world), "--queries", "teacher:atlas", "--nest", str(tmp_path / "qe"),
            "--out", str(tmp_path / "bad"))
    assert r.returncode != 0 and "not a two_tower" in r.stderr and not (tmp_path / "bad").exists()


def test_nested_qe_rec_starts_exactly_at_the_two_tower(tiny_world):
    world = load_world(tiny_world)
    tt, enc, _ = train_ranker(world, "two_tower", None, TrainConfig(epochs=2), log=lambda *a: None)
    need = query_embeddings(world, "need")
    qe, _, hist = train_ranker(world, "qe_rec", need, TrainConfig(epochs=0), encoder=enc, nest=tt, log=lambda *a: None)
    idx = np.arange(len(world.samples))
    np.testing.assert_allclose(score(qe, RankerData(world, enc, need), idx), score(tt, RankerData(world, enc), idx),
                               atol=1e-4)
    assert hist[0]["epoch"] == 0


@pytest.mark.parametrize("arch", ["qe_rec", "qe_rec_gated"])
def test_nested_qe_rec_trains_its_query_paths_only_and_the_true_need_lifts_it(tiny_world, arch):
    world = load_world(tiny_world)
    tt, enc, _ = train_ranker(world, "two_tower", None, TrainConfig(epochs=3), log=lambda *a: None)
    need = query_embeddings(world, "need")
    # the query term starts at zero and grows at Adam's pace: the tiny world needs small batches and a larger lr
    qe, _, hist = train_ranker(world, arch, need, TrainConfig(epochs=6, batch_size=64, lr=0.02, patience=6), encoder=enc,
                               nest=tt, query_text=384, log=lambda *a: None)
    frozen = tt.state_dict()
    assert all(torch.equal(frozen[k], v) for k, v in qe.state_dict().items() if k in frozen)  # the two-tower path
    assert max(h["valid_gauc"] for h in hist) >= hist[0]["valid_gauc"]
    if arch == "qe_rec_gated":  # the true need, cosine with the intents' text from the start: worth reading
        assert max(h["valid_gauc"] for h in hist) > hist[0]["valid_gauc"] + 0.01, hist


def test_gated_qe_rec_reads_a_text_query_as_its_cosine_with_the_intents_text(tiny_world):
    world = load_world(tiny_world)
    need = query_embeddings(world, "need")
    text = torch.from_numpy(encode_texts([it["text"] for it in world.intents]))
    cfg = RankerConfig(arch="qe_rec_gated", cardinalities=[3, 4], n_intents=len(world.intents), query_dim=384,
                       query_text=384)
    model = build_ranker(cfg, text).eval()
    base = build_ranker(RankerConfig(arch="two_tower", cardinalities=[3, 4], n_intents=len(world.intents)), text).eval()
    base.load_state_dict(model.state_dict(), strict=False)
    model.start_from_baseline()
    with torch.no_grad():
        model.gate[-1].bias.fill_(30.0)           # trust every query fully
        model.scale.fill_(1.0 / SCALE_GAIN)      # a match scale of 1
    x, b = torch.zeros(4, 2, dtype=torch.long), torch.zeros(4, 8, dtype=torch.long)
    cand = torch.arange(12).reshape(4, 3)
    q = torch.from_numpy(need[:4])
    with torch.no_grad():
        got = model(x, b, cand, q) - base(x, b, cand)
    np.testing.assert_allclose(got.numpy(), np.einsum("bd,bcd->bc", need[:4], text[cand].numpy()), atol=1e-5)


def test_calibration_never_returns_a_ranker_worse_on_valid_than_its_start(tiny_world):
    # continuing from a trained ranker (closed-loop calibration, the control) makes that ranker epoch 0:
    # when every epoch is worse on valid (here a learning rate that wrecks the weights) the start comes back
    world = load_world(tiny_world)
    need = query_embeddings(world, "need")
    qe, enc, first = train_ranker(world, "qe_rec", need, TrainConfig(epochs=2), log=lambda *a: None)
    again, _, hist = train_ranker(world, "qe_rec", need, TrainConfig(epochs=2, lr=50.0, patience=5), init=qe,
                                  encoder=enc, log=lambda *a: None)
    assert [h["epoch"] for h in hist] == [0, 1, 2]
    assert hist[0]["valid_gauc"] == max(h["valid_gauc"] for h in first)
    assert max(h["valid_gauc"] for h in hist[1:]) < hist[0]["valid_gauc"]
    idx = np.arange(len(world.samples))
    np.testing.assert_array_equal(score(again, RankerData(world, enc, need), idx), score(qe, RankerData(world, enc, need), idx))
    # early stopping on chosen rows (experiments/calibration_split.py: fit on half the valid users, stop on the
    # other half): epoch 0 is the start's GAUC on exactly those rows, not on the valid split
    half = world.indices("valid")[::2]
    _, _, on_half = train_ranker(world, "qe_rec", need, TrainConfig(epochs=0), init=qe, encoder=enc, stop_indices=half,
                                 log=lambda *a: None)
    assert on_half[0]["valid_gauc"] == split_gauc(qe, RankerData(world, enc, need), "valid", half) != hist[0]["valid_gauc"]


def test_calibrating_a_nested_qe_rec_keeps_its_two_tower_towers(tiny_world, tiny_reasoner, tmp_path, monkeypatch):
    import rgalign_rl.align.calibrate as calibration
    from rgalign_rl.ranker.train import save_ranker

    world = load_world(tiny_world)
    tt, enc, _ = train_ranker(world, "two_tower", None, TrainConfig(epochs=2), log=lambda *a: None)
    need = query_embeddings(world, "need")
    start, _, _ = train_ranker(world, "qe_rec_gated", need, TrainConfig(epochs=0), encoder=enc, nest=tt,
                               query_text=384, log=lambda *a: None)
    # continuing a nested ranker with its towers frozen: the query paths learn (the true need lifts valid),
    # the towers stay the two-tower's
    cont, _, hist = train_ranker(world, "qe_rec_gated", need, TrainConfig(epochs=3, batch_size=64, lr=0.02, patience=3),
                                 init=start, encoder=enc, frozen_towers=True, log=lambda *a: None)
    assert max(h["valid_gauc"] for h in hist[1:]) > hist[0]["valid_gauc"]
    assert all(torch.equal(v, cont.state_dict()[k]) for k, v in tt.state_dict().items())
    assert not torch.equal(cont.query_to_text.weight, start.query_to_text.weight)
    # calibration continues a nested QE-Rec that way, and says it is nested
    spec = f"reasoner:{tiny_reasoner}"
    q = query_embeddings(world, spec, "both", max_new_tokens=8)
    qe, _, hist = train_ranker(world, "qe_rec_gated", q, TrainConfig(epochs=1), encoder=enc, nest=tt, query_text=384,
                               log=lambda *a: None)
    save_ranker(tmp_path / "qe", qe, enc, {"queries": spec, "query_mode": "both", "history": hist, "max_new_tokens": 8,
                                           "nested_in": "tt"})
    seen = {}

    def spy(*args, **kw):
        seen.update(kw)
        return train_ranker(*args, **kw)

    monkeypatch.setattr(calibration, "train_ranker", spy)
    out = calibration.calibrate(world, tiny_reasoner, tmp_path / "qe", tmp_path / "cal", epochs=1, log=lambda *a: None,
                                max_new_tokens=8)
    assert seen["frozen_towers"] is True and load_ranker(out)[2]["nested_in"] == "tt"


def test_text_queries_read_like_the_dense_vectors_and_hold_each_text_once(tiny_world):
    from rgalign_rl.ranker.features import FeatureEncoder
    from rgalign_rl.ranker.queries import TextQueries, query_texts

    world = load_world(tiny_world)
    texts = query_texts(world, "teacher:atlas")
    q, dense = query_embeddings(world, "teacher:atlas", "text"), encode_texts(texts)
    assert isinstance(q, TextQueries) and q.shape == dense.shape
    np.testing.assert_array_equal(np.asarray(q), dense)
    np.testing.assert_array_equal(q[5:9], dense[5:9])
    assert len(q.table) == len(set(texts) | {""}) < len(texts) / 2  # each text once, code 0 the empty one
    assert not q.table[0].any() and not TextQueries(["", "a query", ""])[[0, 2]].any()
    enc = FeatureEncoder.fit(world.samples, world.indices("train"))
    rows = torch.arange(0, len(dense), 3)
    assert torch.equal(RankerData(world, enc, q).batch(rows)[3], RankerData(world, enc, dense).batch(rows)[3])
