"""How learnable is a request's need from its features? A yardstick for the reasoner (issue 26, sessions 23-24).

    python experiments/need_learnability.py RUN   # a finished `rgalign run` on a ShopSim world

ShopSim's need is a deterministic function of the features (the most specific rule that holds; on test requests,
after every launch, the features alone decide it), so a perfect reader of features names it on 100% of test
requests. Here random forests (scikit-learn, 300 trees; no text: categories as codes, numbers as they are, each
recent action counted) learn features -> need from the training split, with the labels a reasoner could learn from:
- the true need (the oracle: clean labels; the learnability of the world's rules at this training size), also with
  the request's day as a column, and with the requests under the current KB weighted 3x (best_of_n.current_kb_weight);
- the need each teacher row names (its query's nearest need phrase, every row an example: what the warm start's
  SFT reads), on all of them and on the run's `reasoner.warm.max_pairs` first rows;
and their test need accuracy overall and where the two-tower misses (the run's kept two-tower test scores rank the
need's intent below first), split into cold needs (intents the KB gained late) and the others, beside the run's
reasoners (metrics.json). Where trees on the teachers' labels beat the reasoner by far, the reasoner's learning is
the limit; where they do not, the labels are.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgalign_rl.align.best_of_n import current_kb_requests  # noqa: E402
from rgalign_rl.align.diagnostics import nearest_needs, need_ranks  # noqa: E402
from rgalign_rl.align.evaluate import scores_file  # noqa: E402
from rgalign_rl.world import load_world  # noqa: E402


def feature_matrix(world, rows):
    """[n, F + A] float features (categories as codes, numbers as they are) and counts of each recent action (the
    behaviour the reasoner reads: an action comes from the need's topic with chance 0.4), with their names."""
    names = sorted(world.samples[int(rows[0])]["features"])
    cats, actions = {}, {}
    x = np.zeros((len(rows), len(names)))
    acts = []
    for r, i in enumerate(rows):
        sample = world.samples[int(i)]
        f = sample["features"]
        for j, k in enumerate(names):
            v = f[k]
            if isinstance(v, (bool, str)):
                v = cats.setdefault(k, {}).setdefault(v, len(cats.setdefault(k, {})))
            x[r, j] = float(v)
        acts.append([actions.setdefault(a, len(actions)) for a in sample.get("behavior") or []])
    counts = np.zeros((len(rows), len(actions)))
    for r, a in enumerate(acts):
        np.add.at(counts[r], a, 1)
    return np.concatenate([x, counts], 1), names + sorted(actions, key=actions.get)


def fit_and_score(x, y, x_test, y_test, groups, max_features="sqrt", weight=None):
    from sklearn.ensemble import RandomForestClassifier

    t = time.time()
    # a forest, not boosting: HistGradientBoosting over ~125 needs (some with one example) fitted 28% of its own
    # training labels at learning rate 0.05 and 8% at 0.1. Each split weighing half the columns ("0.5") finds the
    # rules' conjunctions far better than the default sqrt (session 24: 59.7% vs 46.2% where the two-tower misses)
    model = RandomForestClassifier(300, max_features=max_features, n_jobs=2, random_state=0)
    model.fit(x, y, sample_weight=weight)
    hit = model.predict(x_test) == y_test
    return [hit.mean()] + [hit[g].mean() if g.any() else float("nan") for g in groups], time.time() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    args = ap.parse_args()
    run = Path(args.run)
    metrics = json.loads((run / "metrics.json").read_text())
    world = load_world(metrics["world"])
    train, test = world.indices("train"), world.indices("test")
    rank = need_ranks(world, test, np.load(scores_file(run, "two_tower")))
    room = rank > 1
    # cold needs: intents the KB gained late (world.json's cold_intents, ShopSim's); their rules held before launch
    # too, when the request's need was another intent: the same features, two labels, told apart only by time
    cold_ids = set(world.meta.get("cold_intents") or ())
    cold = np.array([c in cold_ids for c in world.oracle.field_of_samples("need_intent")[test]])
    groups = [room, room & cold, room & ~cold]
    need_of = lambda rows: np.array([(world.oracle.needs_of(int(i)) or [""])[0] for i in rows])  # noqa: E731
    x_all, names = feature_matrix(world, np.concatenate([train, test]))
    x_train, x_test, y_test = x_all[: len(train)], x_all[len(train) :], need_of(test)
    day = (world.samples.timestamp[np.concatenate([train, test])] // 86400).astype(float)[:, None]
    pos = {int(i): r for r, i in enumerate(train)}
    t = world.teachers
    rows = [(pos[s], q) for s, _, q in t.rows() if s in pos]
    named = nearest_needs(world, [q for _, q in rows])
    at = np.array([r for r, _ in rows])
    cap = metrics["config"]["reasoner"]["warm"].get("max_pairs") or len(rows)
    current = current_kb_requests(world, train)
    print(f"{len(train)} training requests ({current.mean():.0%} under the current KB), {len(rows)} teacher rows (warm "
          f"start cap {cap}), {len(test)} test requests, {room.mean():.1%} of them where the two-tower misses ({cold[room].mean():.0%}"
          f" of those a cold need); {len(names)} columns")
    print("| learner | labels | examples | test need accuracy | where the two-tower misses | of which cold needs | other needs | fit s |")
    print("|---|---|---|---|---|---|---|---|")
    y_true = need_of(train)
    runs = [("forest (sqrt)", "true need (oracle)", x_train, y_true, "sqrt", None),
            ("forest (0.5)", "true need (oracle)", x_train, y_true, 0.5, None),
            ("forest (0.5) + the request's day", "true need (oracle)", np.concatenate([x_train, day[: len(train)]], 1),
             y_true, 0.5, None),
            ("forest (0.5), current-KB requests x3", "true need (oracle)", x_train, y_true, 0.5, np.where(current, 3.0, 1.0)),
            ("forest (sqrt)", "teacher rows' named needs, all", x_train[at], np.array(named), "sqrt", None),
            ("forest (0.5)", "teacher rows' named needs, all", x_train[at], np.array(named), 0.5, None),
            ("forest (0.5)", f"teacher rows' named needs, first {cap}", x_train[at[:cap]], np.array(named[:cap]), 0.5, None)]
    for learner, label, x, y, mf, wt in runs:
        xt = np.concatenate([x_test, day[len(train) :]], 1) if x.shape[1] > x_test.shape[1] else x_test
        accs, s = fit_and_score(x, y, xt, y_test, groups, mf, wt)
        print(f"| {learner} | {label} | {len(y)} | " + " | ".join(f"{a:.1%}" for a in accs) + f" | {s:.0f} |", flush=True)
    for st in metrics["stages"]:
        na = st.get("need_accuracy")
        if isinstance(na, dict) and st["name"] in ("qe_rec", "rg_sft", "dpo", "final"):
            print(f"| the run's reasoner at {st['name']} (its queries) | | | {na['overall']:.1%} | "
                  f"{na.get('two_tower_misses', float('nan')):.1%} | | | |")


if __name__ == "__main__":
    main()
