import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from rgalign_rl.metrics import evaluate, group_auc, paired_difference, request_metrics, user_stats


def test_group_auc_hand_computed_with_ties_and_skipped_users():
    # user 0: pos scores {0.9, 0.5}, neg {0.5, 0.1} -> pairs: (0.9>0.5)=1, (0.9>0.1)=1, (0.5=0.5)=.5, (0.5>0.1)=1 -> 3.5/4
    # user 1: all negative -> skipped; user 2: one pos 0.2 below one neg 0.3 -> 0
    users = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    scores = np.array([0.9, 0.5, 0.5, 0.1, 0.3, 0.7, 0.2, 0.3])
    labels = np.array([1, 1, 0, 0, 0, 0, 1, 0])
    auc, w = group_auc(users, scores, labels)
    assert auc[0] == pytest.approx(0.875)
    assert w.tolist() == [4, 0, 2]
    assert auc[2] == 0.0
    gauc = (auc * w).sum() / w.sum()
    assert gauc == pytest.approx(0.875 * 4 / 6)


def test_group_auc_matches_sklearn_per_group():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 30, 2000)
    scores = np.round(rng.random(2000), 1)  # coarse: many ties
    labels = (rng.random(2000) < 0.3).astype(float)
    auc, w = group_auc(users, scores, labels)
    for u in range(30):
        m = users == u
        if 0 < labels[m].sum() < m.sum():
            assert auc[u] == pytest.approx(roc_auc_score(labels[m], scores[m]))
            assert w[u] == m.sum()
        else:
            assert w[u] == 0


def test_request_metrics_hand_computed():
    scores = np.array([[0.1, 0.9, 0.8, 0.7, 0.0], [0.5, 0.4, 0.3, 0.2, 0.1], [1, 2, 3, 0, 0]])
    labels = np.array([[1, 0, 0, 1, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=float)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=bool)
    m = request_metrics(scores, labels, mask, k=3)
    # request 0: ranking 1,2,3,0,4 -> clicked at ranks 3 and 4; top-3 holds one of two
    assert m["recall@3"][0] == pytest.approx(0.5)
    ideal = 1 + 1 / np.log2(3)
    assert m["ndcg@3"][0] == pytest.approx((1 / np.log2(4)) / ideal)
    assert m["mrr"][0] == pytest.approx(1 / 3)
    assert np.isnan(m["recall@3"][1]) and np.isnan(m["mrr"][1])  # no click: excluded
    # request 2: the clicked candidate ranks third among three live candidates; padding is ignored
    assert m["recall@3"][2] == 1.0
    assert m["mrr"][2] == pytest.approx(1 / 3)


def test_evaluate_perfect_and_reversed_rankers_and_cis():
    rng = np.random.default_rng(1)
    labels = (rng.random((400, 10)) < 0.2).astype(float)
    mask = np.ones_like(labels, dtype=bool)
    users = rng.integers(0, 80, 400)
    good = evaluate(labels + 0.01 * rng.random(labels.shape), labels, mask, users, n_boot=200)
    bad = evaluate(-labels, labels, mask, users, n_boot=200)
    assert good["gauc"] == pytest.approx(1.0) and good["recall@3"] > 0.9 and good["mrr"] == pytest.approx(1.0)
    assert bad["gauc"] == pytest.approx(0.0) and bad["error_rate"] == pytest.approx(1.0)
    rand = evaluate(rng.random(labels.shape), labels, mask, users, n_boot=200)
    lo, hi = rand["gauc_ci"]
    assert lo < rand["gauc"] < hi and 0.4 < rand["gauc"] < 0.6


def test_paired_difference_is_zero_for_identical_rankers():
    rng = np.random.default_rng(2)
    labels = (rng.random((200, 8)) < 0.3).astype(float)
    mask = np.ones_like(labels, dtype=bool)
    users = rng.integers(0, 40, 200)
    s = user_stats(rng.random(labels.shape), labels, mask, users)
    d = paired_difference(s, s)
    assert d["gauc"]["diff"] == 0 and d["gauc"]["ci"] == [0, 0]


def test_expected_gauc_uses_soft_labels_and_equals_gauc_on_hard_ones():
    from rgalign_rl.metrics import group_auc, soft_group_auc

    # one user, three impressions scored 3 > 2 > 1 with click probabilities 0.5, 0.2, 0.1:
    # pairs (a, b), weight p_a (1 - p_b): a over b counts 1. Ordered pairs a != b:
    # (0,1) .5*.8=.40 ok, (0,2) .5*.9=.45 ok, (1,0) .2*.5=.10 no, (1,2) .2*.9=.18 ok, (2,0) .1*.5=.05 no, (2,1) .1*.8=.08 no
    auc, w = soft_group_auc(np.zeros(3, int), np.array([3.0, 2.0, 1.0]), np.array([0.5, 0.2, 0.1]))
    assert auc[0] == pytest.approx((0.40 + 0.45 + 0.18) / (0.40 + 0.45 + 0.10 + 0.18 + 0.05 + 0.08)) and w[0] == 3
    rng = np.random.default_rng(0)
    users, scores = rng.integers(0, 30, 600), rng.integers(0, 6, 600).astype(float)  # many ties
    labels = (rng.random(600) < 0.3).astype(float)
    for a, b in zip(group_auc(users, scores, labels, 30), soft_group_auc(users, scores, labels, 30)):
        np.testing.assert_allclose(a, b, atol=1e-12)
    auc, w = soft_group_auc(np.zeros(2, int), np.array([1.0, 2.0]), np.zeros(2))  # nothing to rank: skipped
    assert w[0] == 0


def test_bootstrap_in_chunks_is_the_one_draw_and_gives_the_same_cis(monkeypatch):
    from rgalign_rl.metrics import Bootstrap, summarize, user_stats

    n = 300
    one = np.random.default_rng(0).multinomial(n, np.full(n, 1.0 / n), size=1000).astype(np.float64)
    kept = Bootstrap(n)  # fits one chunk: drawn once, kept
    assert (np.asarray(kept) == one).all()
    monkeypatch.setattr(Bootstrap, "CHUNK_CELLS", 7 * n)  # 7 replicates a chunk: drawn again at each use
    chunked = Bootstrap(n)
    assert chunked.rows == 7 and (np.asarray(chunked) == one).all() and chunked._kept is None  # nothing kept
    rng = np.random.default_rng(1)
    scores, labels = rng.random((900, 5)), (rng.random((900, 5)) < 0.3).astype(float)
    stats = user_stats(scores, labels, np.ones((900, 5), bool), np.arange(900) % n)
    assert summarize(stats, kept) == summarize(stats, one)  # one chunk: the numbers of one [B, U] product
    a, b = summarize(stats, chunked), summarize(stats, one)  # in chunks: the same up to the last bits
    assert a.keys() == b.keys() and all(np.allclose(a[k], b[k], rtol=0, atol=1e-12) for k in a)
