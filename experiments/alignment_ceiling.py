"""What is the most alignment's share could be in this world? (issue 26, session 24)

    python experiments/alignment_ceiling.py RUN   # a finished `rgalign run` on a ShopSim world

The control's reasoner learns from the teachers' rows; an aligned one from winners the ranker's reward picks. At
best, the reward picks the true need for every training request: the aligned reasoner then learns from the oracle's
clean labels. So with one learner for both, alignment's share is bounded by what clean labels add over the teachers'.
Here the learner is a random forest (experiments/need_learnability.py: as good as the aligned reasoner or better
where the two-tower misses), its predicted need served as the need's canonical text (the best reading a query can
get), and QE-Rec calibrated on those queries exactly as the loop calibrates (need_accuracy_curve.Calibration):
- teachers: the forest fitted on the teachers' named needs (every row): a strong control;
- oracle: the forest fitted on the true needs: a perfect reward's aligned reasoner;
- oracle, current KB x3: the same with best_of_n.current_kb_weight's weighting.
Training requests' queries come from forests fitted on the other half of the training users (cross-fitted: served
out of sample, as a reasoner's are not quite), valid and test ones from a forest fitted on every training request.
Prints need accuracy (overall, where the two-tower misses), GAUC and expected GAUC, and the paired differences
against the teachers' forest and the warm reasoner (the run's control).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from need_accuracy_curve import Calibration  # noqa: E402
from need_learnability import feature_matrix  # noqa: E402

from rgalign_rl.align.best_of_n import current_kb_requests  # noqa: E402
from rgalign_rl.align.diagnostics import nearest_needs, need_accuracy, need_ranks  # noqa: E402
from rgalign_rl.align.evaluate import scores_file  # noqa: E402


def cross_fitted(x_fit, y, weight, fold_fit, x_train, fold_train, x_rest):
    """Predictions for every training request (``x_train``) from the forest fitted on the other fold's rows, and for
    ``x_rest`` from the forest fitted on all rows (``x_fit``, ``y``: the rows the forests learn from)."""
    from sklearn.ensemble import RandomForestClassifier

    def fit(m):
        return RandomForestClassifier(300, max_features=0.5, n_jobs=2, random_state=0).fit(
            x_fit[m], y[m], sample_weight=None if weight is None else weight[m])

    own = np.empty(len(x_train), dtype=object)
    for f in (0, 1):
        own[fold_train == f] = fit(fold_fit != f).predict(x_train[fold_train == f])
    return own, fit(np.ones(len(x_fit), bool)).predict(x_rest)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    a = ap.parse_args()
    torch.set_num_threads(2)
    run = Path(a.run)
    cal = Calibration(run)
    w, test = cal.world, cal.test
    train = w.indices("train")
    rest = np.concatenate([w.indices("valid"), test])
    x, _ = feature_matrix(w, np.concatenate([train, rest]))
    x_train, x_rest = x[: len(train)], x[len(train) :]
    fold_of_request = w.user_codes[train] % 2  # halves of the training users
    room = need_ranks(w, test, np.load(scores_file(run, "two_tower"))) > 1
    pos = {int(i): r for r, i in enumerate(train)}
    rows = [(pos[s], q) for s, _, q in w.teachers.rows() if s in pos]
    at = np.array([r for r, _ in rows])
    named = np.array(nearest_needs(w, [q for _, q in rows]), dtype=object)
    truth = np.array([(w.oracle.needs_of(int(i)) or [""])[0] for i in train], dtype=object)
    current = current_kb_requests(w, train)
    prompts, warm = cal.warm_queries()
    where = {int(i): k for k, i in enumerate(np.concatenate([train, rest]))}
    at_rows = [where[int(i)] for i in cal.rows]
    learners = {
        "teachers": (x_train[at], named, None, fold_of_request[at]),
        "oracle": (x_train, truth, None, fold_of_request),
        "oracle, current KB x3": (x_train, truth, np.where(current, 3.0, 1.0), fold_of_request),
    }
    results = {"warm reasoner (the control)": (warm, cal.test_stats(prompts, warm))}
    for name, (xs, ys, wt, fold) in learners.items():
        own, other = cross_fitted(xs, ys, wt, fold, x_train, fold_of_request, x_rest)
        queries = [str(q) for q in np.concatenate([own, other])[at_rows]]
        results[name] = (queries, cal.test_stats(prompts, queries))
        print(f"{name}: done", file=sys.stderr, flush=True)
    base_t, base_w = results["teachers"][1], results["warm reasoner (the control)"][1]
    print("| queries | need accuracy: test / where the two-tower misses | GAUC | expected GAUC | "
          "vs the teachers' forest: GAUC / expected | vs the warm reasoner: GAUC / expected |")
    print("|---|---|---|---|---|---|")
    for name, (queries, stats) in results.items():
        acc = need_accuracy(w, test, queries[-len(test):], room)
        v, ct, cw = stats.value(), cal.cells(base_t, stats), cal.cells(base_w, stats)
        print(f"| {name} | {acc['overall']:.1%} / {acc['two_tower_misses']:.1%} | {v['gauc']:.4f} | "
              f"{v['expected_gauc']:.4f} | {ct['gauc']} / {ct['expected_gauc']} | {cw['gauc']} / {cw['expected_gauc']} |")


if __name__ == "__main__":
    main()
