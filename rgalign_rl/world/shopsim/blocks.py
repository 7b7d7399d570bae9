"""ShopSim drawn in blocks: the paper-sized world (~7.5M requests, 90 features) in minutes and bounded memory.

The story is ``simulator.py``'s, step for step; only the drawing is vectorised over a block of requests (the
request-by-request path spends ~0.5 ms a request in Python: an hour at this size):
- candidates: the need (with the recall's chance), its sibling (0.7), up to 4 more of the need's topic, 6 drawn
  by popularity without replacement (Gumbel top-k), the rest uniform among the live intents; shuffled;
- clicks: each candidate independently with the oracle's probability;
- behaviour: 3-6 actions, each from the need's topic with chance 0.4;
- teacher rows: coverage, right / vague / wrong / biased as in ``_teacher_rows``; the wording (synonyms,
  dropped words, openers) drawn from a pool of :data:`PHRASINGS` phrasings per (teacher, named intent), each
  written by ``ShopSim._phrase`` itself.
The random stream differs from the request-by-request path, so a size keeps one engine: the published sizes
keep theirs (their files, and every figure measured on them, stay the same).
Samples go to ``samples-NNNNN.parquet`` shards (``features`` a struct column), oracle and teacher rows to JSONL.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .catalog import FEATURES, TOPIC_ACTIONS
from .context import AMOUNTS, COUNTS, IDS, RECENCIES, draw_context, id_vocabulary

BLOCK = 100_000  # requests drawn at once: [BLOCK, intents] float64 keys are ~100 MB
PHRASINGS = 256  # wordings kept per (teacher, named intent): few enough to write once, enough that a frequent
                 # need's share of plain and reworded phrasings is the teacher's own (32 was 3 points off)


def _top(keys: np.ndarray, n: int) -> np.ndarray:
    """[B, n] column indices of each row's n largest keys."""
    return np.argpartition(-keys, n - 1, axis=1)[:, :n]


class BlockDrawer:
    def __init__(self, sim):
        from .simulator import TEACHERS

        self.sim, self.cfg, self.r = sim, sim.cfg, sim.rng
        K, topics = sim.K, sorted(TOPIC_ACTIONS)
        self.topic_of = np.array([topics.index(it["topic"]) for it in sim.intents])
        self.same_topic = self.topic_of[:, None] == self.topic_of[None, :]
        self.logw = np.log(sim.weight)
        self.intent_ids = np.array([it["intent_id"] for it in sim.intents])
        self.actions = np.array(sorted(a for acts in TOPIC_ACTIONS.values() for a in acts))
        code = {a: i for i, a in enumerate(self.actions)}
        self.topic_actions = np.array([[code[a] for a in TOPIC_ACTIONS[t]] for t in topics])  # [topics, 2]
        self.teachers = TEACHERS
        # wordings: [teacher][named intent or K + topic for a vague one] -> PHRASINGS JSON strings
        self.pool = {}
        for name, t in TEACHERS.items():
            rows = []
            for j in range(K):
                rows.append([json.dumps(sim._phrase(j, j, t)) for _ in range(PHRASINGS)])
            for tp in topics:
                k = next(i for i, it in enumerate(sim.intents) if it["topic"] == tp)
                rows.append([json.dumps(sim._phrase(-1, k, t)) for _ in range(PHRASINGS)])
            self.pool[name] = rows
        self.same_lists = [np.flatnonzero(self.same_topic[k] & (np.arange(K) != k)) for k in range(K)]

    def candidates(self, k: np.ndarray, live: np.ndarray) -> np.ndarray:
        """[B, n_candidates] intent codes, as ``ShopSim._candidates`` draws them."""
        cfg, r, sim = self.cfg, self.r, self.sim
        B, K = live.shape
        rows = np.arange(B)
        keys = np.where(live, r.random((B, K)), -np.inf)  # the uniform fill: the lowest band
        forced = np.zeros((B, K), bool)
        forced[rows, k] = r.random(B) < cfg.recall
        partner = sim.partner[k]
        forced[rows, partner] |= live[rows, partner] & (r.random(B) < 0.7)
        same = live & self.same_topic[k] & ~forced
        pick = _top(np.where(same, r.random((B, K)), -1.0), 4)
        ok = np.take_along_axis(same, pick, 1)
        chosen = np.zeros((B, K), bool)
        np.put_along_axis(chosen, pick, ok, 1)
        rest = live & ~forced & ~chosen
        gumbel = self.logw[None, :] - np.log(-np.log(r.random((B, K))))
        pick = _top(np.where(rest, gumbel, -np.inf), 6)
        ok = np.take_along_axis(rest, pick, 1)
        popular = np.zeros((B, K), bool)
        np.put_along_axis(popular, pick, ok, 1)
        keys += 4.0 * forced + 3.0 * chosen + 2.0 * popular
        cands = _top(keys, cfg.n_candidates)
        shuffle = np.argsort(r.random(cands.shape), axis=1)
        return np.take_along_axis(cands, shuffle, 1)

    def block(self, cols, user, user_bias, need, segment, idx):
        """The samples, oracle and teacher rows of requests ``idx`` (world rows, in output order)."""
        cfg, r, sim = self.cfg, self.r, self.sim
        B = len(idx)
        k = need[idx]
        live = cols["day"][idx][:, None] >= sim.launch_day[None, :]
        cands = self.candidates(k, live)
        logit = cfg.other_logit + cfg.popularity_coef * sim.zpop[cands]
        logit = np.where(cands == sim.partner[k][:, None], cfg.partner_logit, logit)
        logit = np.where(cands == k[:, None], cfg.need_logit, logit)
        prob = 1 / (1 + np.exp(-(logit + user_bias[user[idx]][:, None])))
        clicked = r.random(prob.shape) < prob
        n_actions = r.integers(3, 7, B)
        own = r.random((B, 6)) < 0.4
        actions = np.where(own, self.topic_actions[self.topic_of[k]][np.arange(B)[:, None], r.integers(0, 2, (B, 6))],
                           r.integers(0, len(self.actions), (B, 6)))
        return dict(k=k, cands=cands, prob=prob, clicked=clicked, actions=actions, n_actions=n_actions,
                    teachers=self.teacher_rows(k, segment[idx]))

    def teacher_rows(self, k: np.ndarray, in_segment: np.ndarray) -> list[tuple[np.ndarray, str, list[str]]]:
        """Per teacher: (rows that have one, teacher, JSON-quoted query of each such row)."""
        r, cfg, sim, out = self.r, self.cfg, self.sim, []
        B, K = len(k), sim.K
        for name, t in self.teachers.items():
            has = r.random(B) < t["coverage"]
            u = r.random(B)
            biased = (name == "atlas") & cfg.teacher_bias & in_segment & (k % 2 == 0) & (r.random(B) < cfg.bias_rate)
            named = np.where(u < t["correct"], k, -1)
            wrong = u >= t["correct"] + t["vague"]
            if name == "echo":  # any other intent
                other = r.integers(0, K - 1, B)
                other += other >= k
            else:  # another intent of the need's topic
                pick = r.random(B)
                other = np.array([self.same_lists[kk][int(p * len(self.same_lists[kk]))] for kk, p in zip(k, pick)])
            named = np.where(wrong, other, named)
            named = np.where(biased, sim.partner[k], named)
            slot = np.where(named >= 0, named, K + self.topic_of[k])
            variant = r.integers(0, PHRASINGS, B)
            pool = self.pool[name]
            rows = np.flatnonzero(has)
            out.append((rows, name, [pool[s][v] for s, v in zip(slot[rows].tolist(), variant[rows].tolist())]))
        return out


def _ids(prefix: str, numbers: np.ndarray, width: int) -> np.ndarray:
    return np.char.add(prefix, np.char.zfill(numbers.astype(str), width))


def feature_columns(sim, cols: dict, context: dict) -> dict:
    """name -> (kind, values or None, array): the samples' features in the world's order (the rules' 28, then
    the context's 62)."""
    out = {}
    for name, (kind, spec, _, _) in FEATURES.items():
        out[name] = (kind, np.array(spec) if kind == "cat" else None, cols[name])
    for name in COUNTS:
        out[name] = ("int", None, context[name])
    for name in RECENCIES:
        out[name] = ("int", None, context[name])
    for name in AMOUNTS:
        out[name] = ("float", None, context[name])
    for name in IDS:
        out[name] = ("cat", id_vocabulary(name), context[name])
    return out


def write_blocks(sim, tmp: Path, fo, ft) -> int:
    """Draws the world in blocks; samples to shards in ``tmp``, oracle and teacher rows to the open files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .simulator import EPOCH

    cfg = sim.cfg
    cols, user, user_bias, need, segment = sim.draw_requests()
    n_users = int(user.max()) + 1
    features = feature_columns(sim, cols, draw_context(sim.rng, user, n_users))
    drawer = BlockDrawer(sim)
    N = len(user)
    ts = EPOCH + cols["day"] * 86400 + cols["hour_of_day"] * 3600 + sim.rng.integers(0, 3600, N)
    order = np.lexsort((np.arange(N), ts))
    writer, shard, in_shard = None, 0, 0
    intents = drawer.intent_ids
    step = min(BLOCK, cfg.shard_rows)  # a shard holds whole blocks
    for a in range(0, N, step):
        idx = order[a : a + step]
        d = drawer.block(cols, user, user_bias, need, segment, idx)
        B = len(idx)
        sid = _ids("S", np.arange(a, a + B), 6)
        C = d["cands"].shape[1]
        offsets = pa.array(np.arange(0, B * C + 1, C, dtype=np.int32))
        cand_ids = pa.ListArray.from_arrays(offsets, pa.DictionaryArray.from_arrays(
            pa.array(d["cands"].reshape(-1).astype(np.int32)), pa.array(intents)))
        click_counts = d["clicked"].sum(1)
        click_off = pa.array(np.concatenate([[0], np.cumsum(click_counts)]).astype(np.int32))
        clicked = pa.ListArray.from_arrays(click_off, pa.DictionaryArray.from_arrays(
            pa.array(d["cands"][d["clicked"]].astype(np.int32)), pa.array(intents)))
        keep = np.arange(6)[None, :] < d["n_actions"][:, None]
        act_off = pa.array(np.concatenate([[0], np.cumsum(d["n_actions"])]).astype(np.int32))
        behavior = pa.ListArray.from_arrays(act_off, pa.DictionaryArray.from_arrays(
            pa.array(d["actions"][keep].astype(np.int32)), pa.array(drawer.actions)))
        fields = []
        for name, (kind, vocab, values) in features.items():
            v = values[idx]
            if kind == "cat":
                fields.append(pa.DictionaryArray.from_arrays(pa.array(v.astype(np.int32)), pa.array(vocab)))
            elif kind == "bool":
                fields.append(pa.array(v.astype(bool)))
            elif kind == "int":
                fields.append(pa.array(v.astype(np.int64)))
            else:
                fields.append(pa.array(np.round(v.astype(np.float64), 2)))
        table = pa.table({"sample_id": pa.array(sid), "user_id": pa.array(_ids("U", user[idx], 5)),
                          "timestamp": pa.array(ts[idx].astype(np.int64)),
                          "features": pa.StructArray.from_arrays(fields, list(features)),
                          "behavior": behavior, "candidates": cand_ids, "clicked": clicked})
        if writer is None:
            writer = pq.ParquetWriter(tmp / f"samples-{shard:05d}.parquet", table.schema)
        writer.write_table(table)
        in_shard += B
        if in_shard >= cfg.shard_rows:
            writer.close()
            writer, shard, in_shard = None, shard + 1, 0
        _write_side_rows(sim, drawer, d, sid, segment[idx], fo, ft)
    if writer is not None:
        writer.close()
    return N


def _write_side_rows(sim, drawer, d, sid, segment, fo, ft) -> None:
    """Oracle and teacher rows of a block as JSONL (the same fields and number format as the other sizes)."""
    iid = [f'"{x}":' for x in drawer.intent_ids]
    needs = [json.dumps([it["need"]]) for it in sim.intents]
    probs = np.round(d["prob"], 6).tolist()
    lines = []
    for s, cands, ps, k, seg in zip(sid.tolist(), d["cands"].tolist(), probs, d["k"].tolist(), segment.tolist()):
        body = ",".join(iid[c] + repr(p) for c, p in zip(cands, ps))
        lines.append(f'{{"sample_id":"{s}","probs":{{{body}}},"needs":{needs[k]},"need_intent":"{drawer.intent_ids[k]}",'
                     f'"segment":"{"biased" if seg else "other"}"}}\n')
    fo.write("".join(lines))
    rows, lines = [], []
    for t, (have, name, queries) in enumerate(d["teachers"]):  # each request's rows together, as the others
        for i, q in zip(have.tolist(), queries):
            rows.append(i * 8 + t)
            lines.append(f'{{"sample_id":"{sid[i]}","teacher":"{name}","query":{q}}}\n')
    ft.write("".join(lines[j] for j in np.argsort(rows, kind="stable")))
