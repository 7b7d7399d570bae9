"""Do ShopSim's rules, read on a request's logged features, give its need? (issue 26, session 24)

    python experiments/shopsim_rules.py WORLD   # a ShopSim world folder (its world.json names the cold intents)

The need is the most specific rule (rgalign_rl/world/shopsim/catalog.py) that holds among the intents launched by the
request's day. Read with and without the day, on training and test requests: 100% with the day says the features
determine the need (a perfect reader's ceiling); without it, training requests from before a cold intent's launch
differ (its rule held, the need was another intent), test requests (after every launch) do not. Also how many training
examples the need of each test request has.
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgalign_rl.world import load_world  # noqa: E402
from rgalign_rl.world.shopsim.catalog import FEATURES, parse_intents  # noqa: E402
from rgalign_rl.world.shopsim.simulator import EPOCH, rule_holds, rule_priority  # noqa: E402


def main() -> None:
    root = Path(sys.argv[1])
    w = load_world(root)
    cold = set(json.loads((root / "world.json").read_text()).get("cold_intents") or ())
    intents = parse_intents()
    # a cold intent's launch day: its first appearance among any request's candidates (the simulator's cold_launch_day)
    ids, mask = w.candidates
    day = (w.samples.timestamp - EPOCH) // 86400
    launch = np.zeros(len(intents), np.int64)
    for k, it in enumerate(intents):
        if it["intent_id"] in cold:
            launch[k] = day[(ids == w.intent_index[it["intent_id"]]).any(1) & mask.any(1)].min()
    rows = np.arange(len(w.samples))
    feats = [w.samples[int(i)]["features"] for i in rows]
    cols = {n: np.array([spec.index(f[n]) if kind == "cat" else f[n] for f in feats])
            for n, (kind, spec, _, _) in FEATURES.items()}
    order = rule_priority(intents)
    truth = np.array([(w.oracle.needs_of(int(i)) or [""])[0] for i in rows])
    split = w.split
    print(f"{len(intents)} intents ({len(cold)} cold, launched on day {sorted(set(launch[launch > 0].tolist()))})")
    for use_day in (True, False):
        need = np.full(len(rows), -1)
        for k in order:
            ok = rule_holds(intents[k]["rule"], cols)
            if use_day:
                ok &= day >= launch[k]
            need = np.where((need < 0) & ok, k, need)
        hit = np.array([intents[k]["need"] if k >= 0 else "" for k in need]) == truth
        print(f"rules {'with' if use_day else 'without'} the day: " + ", ".join(
            f"{s} {hit[split == s].mean():.1%}" for s in ("train", "valid", "test")))
    count = Counter(truth[split == "train"])
    n = np.array([count.get(t, 0) for t in truth[split == "test"]])
    print("test requests whose need has this many training examples: " + ", ".join(
        f"{label} {((n >= lo) & (n <= hi)).mean():.1%}"
        for label, lo, hi in (("0", 0, 0), ("1-4", 1, 4), ("5-19", 5, 19), ("20-99", 20, 99), ("100+", 100, 10**9))))


if __name__ == "__main__":
    main()
