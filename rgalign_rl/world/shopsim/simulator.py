"""ShopSim: a simulated Shopee-style customer-service chatbot world.

Generative story (each step a stated hypothesis, each hypothesis a knob):
1. A user (stable traits) opens the chatbot on some day; the situation (order, payment, refund ...
   states) is drawn, and with it a latent *need*: the need is a deterministic function of feature
   interactions (catalog rules; the most specific matching rule wins).
2. A recall stage proposes candidate intents; the user clicks each candidate independently with a
   probability set by need-intent match, intent popularity and a user propensity (``oracle.jsonl``).
3. Simulated teacher LLMs write a latent query per request. They *see the hidden need with noise*:
   they stand in for large LLMs' world knowledge, which is what the paper distils.

Knobs (docs/shopsim.md): ``semantic_gap`` (Zipf-rare needs and cold intents launched a week before
the training period ends: a ranker cannot learn every need -> intent link from its few clicks, while the
teachers write about them from their first day) and
``teacher_bias`` (the most prolific teacher names a neighbouring need in one user segment, many-to-one,
so naive distillation copies the error and ranking feedback must correct it).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ...config import Annotated, NonNegative, OneOf, Positive
from ..world import atomic_dir, json_line, load_world, write_jsonl
from . import context
from .blocks import write_blocks
from .catalog import FEATURES, NONE_SHARE, SYNONYMS, TOPIC_ACTIONS, TOPIC_NOUNS, parse_intents

# users; ~5 requests each. ``paper`` (~7.5M requests, the paper's log) is drawn in blocks with 62 context
# features beside the 28 the rules read (shopsim/blocks.py); the others request by request, as always
SIZES = {"tiny": 400, "small": 5500, "default": 11000, "large": 40000, "huge": 200000, "paper": 1_500_000}
STATE_FEATURES = ("logistics_event", "payment_state", "refund_state", "return_state", "voucher_state",
                  "cancel_request", "paylater_state", "last_chat_topic")
BIASED_REGIONS = ("north", "south", "metro")  # the segment where the prolific teacher is misaligned
EPOCH = 1_700_000_000  # timestamp of day 0, hour 0


@dataclass
class ShopSimConfig:
    seed: int = 0
    size: Annotated[str, OneOf(SIZES)] = "default"
    users: Annotated[int, NonNegative] = 0  # 0: the size's number of users
    shard_rows: Annotated[int, Positive] = 1_000_000  # requests per samples-*.parquet shard (size paper)
    days: int = 42                  # six weeks: five to train and validate, the last one to test
    requests_per_user: float = 5.0
    semantic_gap: bool = True       # off: uniform need frequencies and no cold intents
    need_zipf: float = 1.2          # Zipf exponent of need frequencies when the gap is on
    cold_share: float = 0.15        # share of intents launched late (cold)
    cold_launch_day: int = 21       # a week before training ends: few clicks, but teachers know them at once;
                                    # 28 (the valid period's start) makes them zero-shot for every learner
    teacher_bias: bool = True       # off: the prolific teacher has no segment bias
    bias_rate: float = 0.85         # how often the biased teacher names the wrong need in its segment
    n_candidates: int = 20
    recall: float = 0.9             # chance the recall stage proposes the needed intent
    need_logit: float = 0.6         # click logit of the needed intent
    partner_logit: float = -1.6     # click logit of the needed intent's sibling
    other_logit: float = -4.5       # click logit of any other intent (plus popularity)
    popularity_coef: float = 0.5
    user_sd: float = 0.4            # spread of users' click propensity


TEACHERS = {  # name: coverage, P(correct), P(vague); the rest names a wrong need
    "atlas": dict(coverage=1.0, correct=0.8, vague=0.1, synonym=0.3, dropout=0.0,
                  openers=["", "I want to ", "help me: ", "how to ", "question: "]),
    "sage": dict(coverage=0.35, correct=0.92, vague=0.05, synonym=0.2, dropout=0.0,
                 openers=["", "please help: ", "question: "]),
    "echo": dict(coverage=0.8, correct=0.35, vague=0.45, synonym=0.4, dropout=0.2,
                 openers=["", "hi ", "um "]),
}


class ShopSim:
    def __init__(self, config: ShopSimConfig):
        self.cfg = config
        self.rng = np.random.default_rng(config.seed)
        self.intents = parse_intents()
        self.K = len(self.intents)
        topics = [it["topic"] for it in self.intents]
        local = [topics[:k].count(topics[k]) for k in range(self.K)]
        # siblings: intents 2j and 2j+1 of a topic share a sibling link; the biased teacher maps 2j -> 2j+1
        self.partner = np.array([k + 1 if local[k] % 2 == 0 else k - 1 for k in range(self.K)])
        zipf = config.need_zipf if config.semantic_gap else 0.0
        ranks = self.rng.permutation(self.K) + 1
        self.weight = ranks.astype(float) ** -zipf
        logw = np.log(self.weight)
        self.zpop = (logw - logw.mean()) / (logw.std() + 1e-9)  # standardised log popularity (click logits)
        cold = self.rng.random(self.K) < (config.cold_share if config.semantic_gap else 0.0)
        self.launch_day = np.where(cold, config.cold_launch_day, 0)
        self.priority = rule_priority(self.intents)

    # ---- features ------------------------------------------------------------------------------
    def _draw(self, name: str, n: int) -> np.ndarray:
        kind, spec, _, _ = FEATURES[name]
        r = self.rng
        if name in STATE_FEATURES:
            other = r.integers(1, len(spec), n)
            return np.where(r.random(n) < NONE_SHARE, 0, other)
        if kind == "cat":
            p = {"order_status": [.3, .1, .15, .2, .2, .05], "membership": [.5, .25, .15, .1],
                 "device": [.5, .3, .2], "language": [.4, .15, .15, .1, .1, .1]}.get(name)
            return r.choice(len(spec), n, p=p)
        if kind == "bool":
            return r.random(n) < {"is_seller": .08, "address_changed": .1, "flash_sale_active": .2}.get(name, .2)
        lo, hi = spec
        if name == "login_failures_7d":
            return np.minimum(r.geometric(0.6, n) - 1, hi)
        if name in ("coins_balance", "account_age_days"):
            return np.minimum(r.exponential((hi - lo) / 4, n).astype(np.int64), hi)
        if kind == "int":
            return r.integers(lo, hi + 1, n)
        if name == "order_value":
            return np.clip(np.round(r.lognormal(np.log(50), 1.0, n), 2), lo, hi)
        return np.clip(np.round(r.exponential(300, n), 2), lo, hi)

    def _impose(self, cols: dict, rows: np.ndarray, cond: tuple) -> None:
        """Sets feature values of ``rows`` so that the condition holds."""
        name, op, value = cond
        kind, spec, _, _ = FEATURES[name]
        n, r = len(rows), self.rng
        if kind == "bool":
            cols[name][rows] = value
        elif kind == "cat":
            code = spec.index(value)
            if op == "=":
                cols[name][rows] = code
            else:
                others = [c for c in range(len(spec)) if c != code]
                cols[name][rows] = np.array(others)[r.integers(0, len(others), n)]
        else:
            lo, hi = spec
            cur = cols[name][rows]
            ok = _compare(cur, op, value)
            if ok.all():
                return
            step = 1 if kind == "int" else 0.01
            a, b = {">=": (value, hi), ">": (value + step, hi), "<=": (lo, value), "<": (lo, value - step),
                    "=": (value, value), "!=": (lo, hi)}[op]
            new = r.integers(int(a), int(b) + 1, n) if kind == "int" else np.round(r.uniform(a, b, n), 2)
            cols[name][rows] = np.where(ok, cur, new)

    def _match(self, cols: dict, k: int) -> np.ndarray:
        return rule_holds(self.intents[k]["rule"], cols) & (cols["day"] >= self.launch_day[k])

    # ---- the world -----------------------------------------------------------------------------
    def generate(self):
        """Yields (sample, oracle row, teacher rows) per request in time order: written as they come, so a
        million-request world never sits in memory as dicts."""
        yield from self._requests(*self.draw_requests())

    def draw_requests(self):
        """Every request's user, features and need, as columns: (cols, user, user_bias, need, segment)."""
        cfg, r = self.cfg, self.rng
        n_users = cfg.users or SIZES[cfg.size]
        user_bias = r.normal(0, cfg.user_sd, n_users)
        traits = {f: self._draw(f, n_users) for f, spec in FEATURES.items() if spec[2]}
        per_user = 1 + r.poisson(cfg.requests_per_user - 1, n_users)
        user = np.repeat(np.arange(n_users), per_user)
        N = len(user)
        cols = {f: v[user] for f, v in traits.items()}
        cols.update({f: self._draw(f, N) for f, spec in FEATURES.items() if not spec[2]})
        cols["day"] = r.integers(0, cfg.days, N)

        # the need: drawn among the rules this user's traits allow, then its situation is imposed
        allowed = np.stack([self._match_static(cols, k) for k in range(self.K)], axis=1)
        allowed &= cols["day"][:, None] >= self.launch_day[None, :]
        u, drawn = r.random(N), np.empty(N, np.int64)
        for a in range(0, N, 65536):  # in blocks: [N, K] float arrays would take GBs at a million requests
            p = allowed[a : a + 65536] * self.weight[None, :]
            drawn[a : a + 65536] = (p.cumsum(1) / p.sum(1, keepdims=True) < u[a : a + 65536, None]).sum(1)
        for k in range(self.K):
            rows = np.flatnonzero(drawn == k)
            for cond in self.intents[k]["rule"]:
                if not FEATURES[cond[0]][2]:
                    self._impose(cols, rows, cond)
        need = np.full(N, -1)
        for k in self.priority:  # the need is a function of the features: the most specific rule wins
            need = np.where((need < 0) & self._match(cols, k), k, need)
        assert (need >= 0).all()
        segment = np.isin(cols["region"], [FEATURES["region"][1].index(g) for g in BIASED_REGIONS])
        return cols, user, user_bias, need, segment

    def _match_static(self, cols: dict, k: int) -> np.ndarray:
        return rule_holds(self.intents[k]["rule"], cols, traits_only=True)

    def _requests(self, cols, user, user_bias, need, segment):
        cfg, r = self.cfg, self.rng
        N = len(user)
        hour = cols["hour_of_day"]
        ts = EPOCH + cols["day"] * 86400 + hour * 3600 + r.integers(0, 3600, N)
        order = np.lexsort((np.arange(N), ts))
        topics = np.array([it["topic"] for it in self.intents])
        all_actions = sorted(a for acts in TOPIC_ACTIONS.values() for a in acts)
        for out_i, i in enumerate(order):
            k = need[i]
            live = np.flatnonzero(cols["day"][i] >= self.launch_day)
            cands = self._candidates(k, live, topics)
            logit = cfg.other_logit + cfg.popularity_coef * self.zpop[cands]
            logit[cands == self.partner[k]] = cfg.partner_logit
            logit[cands == k] = cfg.need_logit
            prob = 1 / (1 + np.exp(-(logit + user_bias[user[i]])))
            clicked = cands[r.random(len(cands)) < prob]
            sid = f"S{out_i:06d}"
            topic = self.intents[k]["topic"]
            behavior = [_pick(r, TOPIC_ACTIONS[topic]) if r.random() < 0.4 else _pick(r, all_actions)
                        for _ in range(r.integers(3, 7))]
            sample = {"sample_id": sid, "user_id": f"U{user[i]:05d}", "timestamp": int(ts[i]),
                      "features": self._feature_row(cols, i), "behavior": [str(b) for b in behavior],
                      "candidates": [self.intents[c]["intent_id"] for c in cands],
                      "clicked": [self.intents[c]["intent_id"] for c in clicked]}
            oracle = {"sample_id": sid, "probs": {self.intents[c]["intent_id"]: round(float(q), 6)
                                                  for c, q in zip(cands, prob)},
                      "needs": [self.intents[k]["need"]], "need_intent": self.intents[k]["intent_id"],
                      "segment": "biased" if segment[i] else "other"}
            yield sample, oracle, self._teacher_rows(sid, k, bool(segment[i]))

    def _candidates(self, k: int, live: np.ndarray, topics: np.ndarray) -> np.ndarray:
        cfg, r = self.cfg, self.rng
        picked: list[int] = []
        if r.random() < cfg.recall:
            picked.append(k)
        if self.partner[k] in live and r.random() < 0.7:
            picked.append(int(self.partner[k]))
        # `live` is sorted and unique, so dropping the picked ones through a mask is np.setdiff1d's result
        # (half of a world's generation went to setdiff1d's sorting)
        taken = np.zeros(self.K, bool)
        taken[picked] = True
        same = live[(topics[live] == topics[k]) & ~taken[live]]
        picked += r.choice(same, min(4, len(same)), replace=False).tolist()
        taken[picked] = True
        rest = live[~taken[live]]
        w = self.weight[rest] / self.weight[rest].sum()
        picked += r.choice(rest, min(6, len(rest)), replace=False, p=w).tolist()
        taken[picked] = True
        rest = live[~taken[live]]
        picked += r.choice(rest, cfg.n_candidates - len(picked), replace=False).tolist()
        return r.permutation(np.array(picked))

    def _feature_row(self, cols: dict, i: int) -> dict:
        row = {}
        for name, (kind, spec, _, _) in FEATURES.items():
            v = cols[name][i]
            row[name] = (spec[v] if kind == "cat" else bool(v) if kind == "bool"
                         else int(v) if kind == "int" else round(float(v), 2))
        return row

    def _teacher_rows(self, sid: str, k: int, in_segment: bool) -> list[dict]:
        r, rows = self.rng, []
        for name, t in TEACHERS.items():
            if r.random() >= t["coverage"]:
                continue
            u = r.random()
            biased = name == "atlas" and self.cfg.teacher_bias and in_segment and k % 2 == 0
            if biased and r.random() < self.cfg.bias_rate:
                named = int(self.partner[k])  # many-to-one: needs 2j and 2j+1 both come out as 2j+1
            elif u < t["correct"]:
                named = k
            elif u < t["correct"] + t["vague"]:
                named = -1
            else:
                same = [j for j in range(self.K) if self.intents[j]["topic"] == self.intents[k]["topic"] and j != k]
                named = _pick(r, same) if name != "echo" else _pick(r, [j for j in range(self.K) if j != k])
            rows.append({"sample_id": sid, "teacher": name, "query": self._phrase(named, k, t)})
        return rows

    def _phrase(self, named: int, k: int, t: dict) -> str:
        r = self.rng
        if named < 0:
            noun = TOPIC_NOUNS[self.intents[k]["topic"]]
            return _pick(r, [f"question about {noun}", f"help with {noun}", f"problem with {noun}"])
        words = []
        for w in self.intents[named]["need"].split():
            if t["dropout"] and r.random() < t["dropout"]:
                continue
            if w in SYNONYMS and r.random() < t["synonym"]:
                w = _pick(r, SYNONYMS[w])
            words.append(w)
        return _pick(r, t["openers"]) + " ".join(words or [self.intents[named]["need"]])


def _pick(r: np.random.Generator, seq: list):
    """``r.choice(seq)``'s draw, without turning the list into an array on every call."""
    return seq[int(r.integers(len(seq)))]


def _compare(a: np.ndarray, op: str, v) -> np.ndarray:
    return {"=": a == v, "!=": a != v, ">=": a >= v, "<=": a <= v, ">": a > v, "<": a < v}[op]


def rule_holds(rule: list[tuple], cols: dict, traits_only: bool = False) -> np.ndarray:
    """[n] whether every condition of an intent's ``rule`` holds on feature columns ``cols`` (categories as codes);
    ``traits_only``: only its conditions on stable user traits."""
    ok = np.ones(len(next(iter(cols.values()))), dtype=bool)
    for name, op, value in rule:
        kind, spec, trait, _ = FEATURES[name]
        if trait or not traits_only:
            ok &= _compare(cols[name], op, spec.index(value) if kind == "cat" else value)
    return ok


def rule_priority(intents: list[dict]) -> list[int]:
    """Intent positions in the order their rules decide a need: the most specific rule (most conditions) first,
    then the earliest line."""
    return sorted(range(len(intents)), key=lambda k: (-len(intents[k]["rule"]), k))


def write_shopsim(out: str | Path, config: ShopSimConfig) -> Path:
    """Generates the world into ``out`` atomically; the result is validated before it replaces ``out``."""
    sim, paper = ShopSim(config), config.size == "paper"
    meta = {"name": f"shopsim-{config.size}-seed{config.seed}",
            "description": "ShopSim: simulated e-commerce customer-service chatbot (rgalign_rl). Teachers "
                           "see each request's hidden need with noise; they stand in for large LLMs' "
                           "world knowledge.",
            "features": {name: spec[3] for name, spec in FEATURES.items()} | (context.descriptions() if paper else {}),
            "shopsim": {k: v for k, v in asdict(config).items()  # knobs left out where unused: older worlds stay the same files
                        if not (k == "users" and not v or k == "shard_rows" and not paper)},
            "cold_intents": [it["intent_id"] for it, d in zip(sim.intents, sim.launch_day) if d > 0],
            "teachers": {name: {k: v for k, v in t.items() if k != "openers"} for name, t in TEACHERS.items()}}
    with atomic_dir(out) as tmp:
        write_jsonl(tmp / "intents.jsonl", ({"intent_id": it["intent_id"], "text": it["text"],
                                             "topic": it["topic"]} for it in sim.intents))
        with open(tmp / "oracle.jsonl", "w", encoding="utf-8") as fo, open(tmp / "teachers.jsonl", "w", encoding="utf-8") as ft:
            if paper:  # drawn in blocks, samples in Parquet shards
                write_blocks(sim, tmp, fo, ft)
            else:
                with open(tmp / "samples.jsonl", "w", encoding="utf-8") as fs:
                    for sample, oracle, teachers in sim.generate():
                        fs.write(json_line(sample))
                        fo.write(json_line(oracle))
                        ft.write("".join(map(json_line, teachers)))
        (tmp / "world.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        load_world(tmp)
    return Path(out)
