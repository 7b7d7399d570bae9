"""Ranking metrics (DESIGN.md section 3), vectorised with numpy, with bootstrap CIs over users.

Definitions (also written into every report):
- An *impression* is a (request, candidate) pair, label 1 if the candidate was clicked.
- GAUC: per-user AUC over that user's impressions (ties count half), averaged with weights = the
  user's number of impressions. Users whose impressions all carry one label are skipped and counted.
  Error rate = 1 - GAUC.
- Recall@K: over requests with at least one click, |top-K ∩ clicked| / |clicked|, averaged.
- NDCG@K: binary gains, ideal DCG over min(K, |clicked|). MRR: reciprocal rank of the first clicked
  candidate. Both over requests with at least one click. Ties in top-K are broken by candidate order.
- Expected GAUC (worlds with an oracle): GAUC with the oracle's click probabilities as soft labels, per user
  sum_{a != b} p_a (1 - p_b) [s_a > s_b] / sum_{a != b} p_a (1 - p_b) (ties half), weighted like GAUC. It is
  the ranking's quality without the noise of which candidate happened to be clicked: a yardstick that can
  tell two stages apart where one sampled click per request cannot (DESIGN.md s.9).
- CIs: percentile bootstrap that resamples users (a user's requests move together).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HEADLINE = ("gauc", "error_rate", "recall@3", "ndcg@3", "mrr")
PAIRED = ("gauc", "recall@3")  # the metrics every paired stage comparison reports (the targets)
EXPECTED = "expected_gauc"     # GAUC against the oracle's probabilities: reported beside them where a world has one


@dataclass
class UserStats:
    """Per-user sufficient statistics: every metric is sum(num) / sum(den) over (resampled) users."""

    num: dict[str, np.ndarray]
    den: dict[str, np.ndarray]
    skipped_users: int

    def value(self, weights: "np.ndarray | Bootstrap | None" = None) -> dict[str, float]:
        if isinstance(weights, Bootstrap):  # replicate by chunk: [B, U] at once is GBs for a million users
            parts = [self.value(w) for w in weights.chunks()]
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        w = np.ones(len(next(iter(self.num.values())))) if weights is None else weights
        out = {}
        for k in self.num:
            d = self.den[k] @ w.T
            out[k] = (self.num[k] @ w.T) / np.where(d > 0, d, np.nan)
        return out


def _sorted_by_user_and_score(users, scores, labels, n_users: int | None):
    """Impressions sorted by (user, score): (users, labels, impressions per user, each user's first position,
    each position's tie group id, whether a position starts a tie group, U). Ties: same user and score."""
    users = np.asarray(users, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    U = int(users.max()) + 1 if n_users is None else n_users
    order = np.lexsort((scores, users))
    u, s, y = users[order], scores[order], np.asarray(labels, dtype=np.float64)[order]
    count = np.bincount(u, minlength=U)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    new_tie = np.ones(len(u), dtype=bool)
    new_tie[1:] = (u[1:] != u[:-1]) | (s[1:] != s[:-1])
    return u, y, count, start, np.cumsum(new_tie) - 1, new_tie, U


def group_auc(users: np.ndarray, scores: np.ndarray, labels: np.ndarray, n_users: int | None = None):
    """Per-user AUC with ties counted half. Returns (auc [U], weight [U]); weight 0 for skipped users.

    ``users`` are integer codes 0..U-1. Uses the rank-sum form: AUC = (R+ - P(P+1)/2) / (P N), where R+ is
    the sum of (tie-averaged) ranks of the positives within the user.
    """
    u, y, count, start, tie, _, U = _sorted_by_user_and_score(users, scores, labels, n_users)
    rank = np.arange(len(u)) - start[u] + 1.0
    rank = (np.bincount(tie, rank) / np.bincount(tie))[tie]
    pos = np.bincount(u, y, minlength=U)
    neg = count - pos
    rank_pos = np.bincount(u, rank * y, minlength=U)
    ok = (pos > 0) & (neg > 0)
    auc = np.where(ok, (rank_pos - pos * (pos + 1) / 2) / np.where(ok, pos * neg, 1), 0.0)
    return auc, np.where(ok, count, 0).astype(np.float64)


def soft_group_auc(users: np.ndarray, scores: np.ndarray, probs: np.ndarray, n_users: int | None = None):
    """Per-user AUC against soft labels ``probs`` in [0, 1] (ties count half); with 0/1 labels it equals
    :func:`group_auc`. Returns (auc [U], weight [U]): weight = the user's impressions, 0 where the user's
    pairs carry no weight (every probability 0, or every one 1)."""
    u, p, count, start, tie, new_tie, U = _sorted_by_user_and_score(users, scores, probs, n_users)
    q = 1.0 - p                                                         # each impression's weight as a negative
    tie_q = np.bincount(tie, q)                                         # negative weight of each tie group
    cum = np.concatenate([[0.0], np.cumsum(q)])                         # cum[i]: sum of q before position i
    tie_start = np.flatnonzero(new_tie)[tie]                            # first position of each row's tie group
    below = cum[tie_start] - cum[start[u]]                              # strictly lower scores, same user
    num = np.bincount(u, p * (below + 0.5 * (tie_q[tie] - q)), minlength=U)
    P, Q = np.bincount(u, p, minlength=U), np.bincount(u, q, minlength=U)
    den = P * Q - np.bincount(u, p * q, minlength=U)                    # every ordered pair a != b
    ok = den > 1e-12
    return np.where(ok, num / np.where(ok, den, 1.0), 0.0), np.where(ok, count, 0).astype(np.float64)


def request_metrics(scores: np.ndarray, labels: np.ndarray, mask: np.ndarray, k: int = 3):
    """Per-request Recall@K, NDCG@K and MRR for padded [n, C] arrays; NaN for requests without clicks."""
    scores = np.where(mask, scores, -np.inf)
    labels = np.where(mask, labels, 0.0)
    order = np.argsort(-scores, axis=1, kind="stable")
    ranked = np.take_along_axis(labels, order, axis=1)
    n_clicked = labels.sum(1)
    has = n_clicked > 0
    topk = ranked[:, :k]
    recall = topk.sum(1) / np.where(has, n_clicked, 1)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = topk @ disc
    ideal = np.cumsum(disc)[np.minimum(n_clicked, k).astype(int) - 1]
    ndcg = dcg / np.where(has, ideal, 1)
    first = np.argmax(ranked > 0, axis=1)
    mrr = 1.0 / (first + 1)
    nan = np.where(has, 1.0, np.nan)
    return {f"recall@{k}": recall * nan, f"ndcg@{k}": ndcg * nan, "mrr": mrr * nan}


def user_stats(scores, labels, mask, users, k: int = 3, probs=None) -> UserStats:
    """Sufficient statistics per user for GAUC and the request metrics; with the oracle's ``probs`` ([n, C]),
    also for the expected GAUC."""
    _, users = np.unique(np.asarray(users), return_inverse=True)  # dense codes: only these users resample
    U = int(users.max()) + 1
    imp_users = np.broadcast_to(users[:, None], mask.shape)[mask]
    auc, w = group_auc(imp_users, scores[mask], labels[mask], U)
    num, den = {"gauc": auc * w}, {"gauc": w}
    if probs is not None:
        auc, w = soft_group_auc(imp_users, scores[mask], probs[mask], U)
        num[EXPECTED], den[EXPECTED] = auc * w, w
    for name, values in request_metrics(scores, labels, mask, k).items():
        ok = ~np.isnan(values)
        num[name] = np.bincount(users[ok], values[ok], minlength=U)
        den[name] = np.bincount(users[ok], minlength=U).astype(np.float64)
    has_imp = np.bincount(imp_users, minlength=U) > 0
    return UserStats(num, den, int((has_imp & (w == 0)).sum()))


class Bootstrap:
    """[B, U] resampling counts of users, shared between rankers so that differences are paired. Made in chunks
    of replicates from one seeded stream (the same counts as drawing all B at once) and kept only when they
    fit in one chunk: 1,000 replicates of the paper's ~900k test users are 7 GB of float64."""

    CHUNK_CELLS = 25_000_000  # ~200 MB per chunk

    def __init__(self, n_users: int, n_boot: int = 1000, seed: int = 0):
        self.n_users, self.n_boot, self.seed = n_users, n_boot, seed
        self.rows = max(1, self.CHUNK_CELLS // max(n_users, 1))
        self._kept: list[np.ndarray] | None = None

    def chunks(self):
        if self._kept is not None:
            yield from self._kept
            return
        rng, p = np.random.default_rng(self.seed), np.full(self.n_users, 1.0 / max(self.n_users, 1))
        for a in range(0, self.n_boot, self.rows):
            chunk = rng.multinomial(self.n_users, p, size=min(self.rows, self.n_boot - a)).astype(np.float64)
            if self.rows >= self.n_boot:  # all of it in one chunk: kept for the next use
                self._kept = [chunk]
            yield chunk

    def __array__(self, dtype=None, copy=None) -> np.ndarray:  # all of it, for small worlds and tests
        return np.concatenate(list(self.chunks())).astype(dtype or np.float64)


def bootstrap_weights(n_users: int, n_boot: int = 1000, seed: int = 0) -> Bootstrap:
    return Bootstrap(n_users, n_boot, seed)


def summarize(stats: UserStats, boot: np.ndarray | None = None, n_boot: int = 1000) -> dict:
    """Point values with 95% CIs: {"gauc": .., "gauc_ci": [lo, hi], ..., "error_rate": ..}."""
    point = stats.value()
    boot = bootstrap_weights(len(stats.num["gauc"]), n_boot) if boot is None else boot
    dist = stats.value(boot)
    out: dict = {}
    for key in point:
        out[key] = float(point[key])
        out[f"{key}_ci"] = [float(x) for x in np.nanpercentile(dist[key], [2.5, 97.5])]
    out["error_rate"] = 1.0 - out["gauc"]
    out["error_rate_ci"] = [1.0 - out["gauc_ci"][1], 1.0 - out["gauc_ci"][0]]
    out["skipped_users"] = stats.skipped_users
    return out


def paired_difference(a: UserStats, b: UserStats, boot: np.ndarray | None = None) -> dict:
    """b - a for every metric, with a paired bootstrap 95% CI (the same users resampled for both)."""
    boot = bootstrap_weights(len(a.num["gauc"])) if boot is None else boot
    pa, pb, da, db = a.value(), b.value(), a.value(boot), b.value(boot)
    return {k: {"diff": float(pb[k] - pa[k]),
                "ci": [float(x) for x in np.nanpercentile(db[k] - da[k], [2.5, 97.5])]} for k in pa}


def evaluate(scores, labels, mask, users, k: int = 3, n_boot: int = 1000) -> dict:
    """Headline metrics with CIs for padded [n, C] scores of requests belonging to ``users``."""
    return summarize(user_stats(scores, labels, mask, users, k), n_boot=n_boot)
