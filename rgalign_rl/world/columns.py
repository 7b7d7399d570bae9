"""A world's rows held as columns (numpy arrays and small vocabularies), not one Python dict per row.

Held as dicts, a request took ~9 KB (55k: ~500 MB) and every stage that read all rows paid per-dict costs. Here
it is a few hundred bytes: fixed-width ids, integer codes into vocabularies, ragged lists (behaviour, candidates,
clicks, needs) as offsets + codes. Rows still read as the world format's dicts (``world.samples[i]``,
``world.oracle[sample_id]``, iterating ``world.teachers``), built on demand; what reads them all reads columns.
"""
from __future__ import annotations

import json
from array import array
from collections.abc import Mapping, Sequence

import numpy as np

NONE, BOOL, INT, FLOAT, STR = range(5)  # a feature value's type, per row


class Vocab:
    """Distinct values in first-seen order, each with its integer code."""

    def __init__(self, values=()):
        self.values: list = list(values)
        self.index = {v: i for i, v in enumerate(self.values)}

    def code(self, value) -> int:
        i = self.index.get(value)
        if i is None:
            i = self.index[value] = len(self.values)
            self.values.append(value)
        return i


class Ragged:
    """Lists of codes, one per row: ``codes[offsets[i]:offsets[i + 1]]``; a row may be None (``missing``)."""

    def __init__(self):
        self.offsets, self.codes, self.missing = array("q", [0]), array("i"), array("b")

    def append(self, codes) -> None:
        self.missing.append(codes is None)
        self.codes.extend(codes or ())
        self.offsets.append(len(self.codes))

    def extend(self, offsets: np.ndarray, codes: np.ndarray, missing: np.ndarray) -> None:
        """Appends many rows at once: ``offsets`` [n + 1] into ``codes``, starting at 0."""
        self.missing.frombytes(missing.astype(np.int8).tobytes())
        self.codes.frombytes(codes.astype(np.int32).tobytes())
        self.offsets.frombytes((offsets[1:].astype(np.int64) + self.offsets[-1]).tobytes())

    def finish(self) -> "Ragged":
        self.offsets, self.codes = np.frombuffer(self.offsets, np.int64), np.frombuffer(self.codes, np.int32)
        self.missing = np.frombuffer(self.missing, np.int8).astype(bool)
        return self

    def row(self, i: int):
        return None if self.missing[i] else self.codes[self.offsets[i] : self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def padded(self, width: int | None = None, fill: int = -1, dtype=np.int64) -> np.ndarray:
        """[n, width] codes, ``fill`` after each row's end (width: the longest row)."""
        n = len(self.offsets) - 1
        lengths = self.lengths
        width = int(lengths.max(initial=0)) if width is None else width
        out = np.full((n, width), fill, dtype)
        col = np.arange(width)
        keep = col[None, :] < lengths[:, None]
        out[keep] = self.codes[(self.offsets[:-1, None] + col[None, :])[keep]]
        return out


class FeatureColumn:
    """One feature over all rows, its Python type kept per row (the encoder keys values by type and value).

    ``kind`` [n] int8 (a read-only view of one value when every row has the same type), ``num`` [n] (the
    narrowest int type when every value is an int or a bool, else float64; a read-only zero view for a column
    of strings) and ``code`` [n] int16/int32 vocabulary codes of the strings (a read-only -1 view for a
    numeric column): 90 features over 7.5M requests take ~2.5 GB, not 8.8."""

    def __init__(self):
        self.vocab = Vocab()
        self._rows = (array("b"), array("d"), array("i"))  # rows appended one at a time, not in a chunk yet
        self._chunks: list[tuple] = []  # (kind, num or None, code or None) arrays, in row order
        self._n = 0

    def pad(self, n: int) -> None:
        """Rows up to ``n`` that did not give this feature: missing."""
        if n > self._n:
            self._add(np.full(n - self._n, NONE, np.int8), None, None)

    def append(self, v) -> None:
        kind = BOOL if isinstance(v, bool) else INT if isinstance(v, int) else FLOAT if isinstance(v, float) else STR
        self._rows[0].append(kind)
        self._rows[1].append(float(v) if kind != STR else 0.0)
        self._rows[2].append(self.vocab.code(v) if kind == STR else -1)
        self._n += 1

    def extend(self, n_before: int, kind: np.ndarray, num: np.ndarray | None, code: np.ndarray | None) -> None:
        """Appends many rows at once, after ``n_before`` rows (rows the column missed are padded first);
        ``num`` None: no numbers among them, ``code`` None: no strings."""
        self.pad(n_before)
        self._add(kind.astype(np.int8), num, code)

    def _add(self, kind, num, code) -> None:
        self._close_rows()
        self._chunk(kind, num, code)
        self._n += len(kind)

    def _close_rows(self) -> None:
        k, x, c = self._rows
        if len(k):
            self._rows = (array("b"), array("d"), array("i"))
            self._chunk(np.frombuffer(k, np.int8), np.frombuffer(x, np.float64), np.frombuffer(c, np.int32))

    def _chunk(self, kind, num, code) -> None:
        self._chunks.append((kind, None if num is None else _narrow(num, kind),
                             None if code is None else code.astype(np.int32, copy=False)))

    def finish(self, n: int) -> "FeatureColumn":
        self.pad(n)
        self._close_rows()
        chunks, self._chunks = self._chunks, []
        self.kind = _uniform(np.concatenate([k for k, _, _ in chunks]) if chunks else np.zeros(0, np.int8))
        nums = [x for _, x, _ in chunks if x is not None]
        if not nums:
            self.num = np.broadcast_to(np.int8(0), (n,))
        else:
            wide = np.result_type(*[x.dtype for x in nums])
            self.num = np.concatenate([np.zeros(len(k), wide) if x is None else x.astype(wide, copy=False) for k, x, _ in chunks])
        if any(c is not None and (c >= 0).any() for _, _, c in chunks):
            code = np.int16 if len(self.vocab.values) < 2**15 else np.int32
            self.code = np.concatenate([np.full(len(k), -1, code) if c is None else c.astype(code) for k, _, c in chunks])
        else:
            self.code = np.broadcast_to(np.int8(-1), (n,))
        del self._rows
        return self

    def value(self, i: int):
        k = self.kind[i]
        return (None if k == NONE else bool(self.num[i]) if k == BOOL else int(self.num[i]) if k == INT
                else float(self.num[i]) if k == FLOAT else self.vocab.values[self.code[i]])

    def keys(self, rows) -> np.ndarray:
        """[len(rows)] ``type:value`` of each row's value (FeatureEncoder's vocabulary key), None where missing."""
        keys, inverse = self.distinct(rows)
        return np.array(keys, dtype=object)[inverse]

    def distinct(self, rows) -> tuple[list, np.ndarray]:
        """(the distinct ``type:value`` keys among ``rows``, None for missing; each row's index into them), found
        per type on one-dimensional arrays: a key string per row would cost minutes at millions of rows."""
        kind = self.kind[rows]
        inverse, keys = np.zeros(len(kind), np.int64), []
        names = {BOOL: "bool", INT: "int", FLOAT: "float", STR: "str"}
        for k in np.unique(kind).tolist():
            sel = kind == k
            if k == NONE:
                uniq, inv = [None], np.zeros(int(sel.sum()), np.int64)
            else:
                values, inv = np.unique((self.code if k == STR else self.num)[rows][sel], return_inverse=True)
                uniq = [f"{names[k]}:{self._python(k, v)}" for v in values.tolist()]
            inverse[sel] = inv.reshape(-1) + len(keys)
            keys += uniq
        return keys, inverse

    def _python(self, kind: int, v: float):
        return bool(v) if kind == BOOL else int(v) if kind == INT else float(v) if kind == FLOAT else self.vocab.values[int(v)]


def _narrow(num: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """``num`` as the narrowest of int8 / int16 / int32 that holds it when no value is a float, else float64
    (a chunk's; the column takes the widest of its chunks)."""
    if len(num) and not (kind == FLOAT).any():
        lo, hi = num.min(), num.max()
        for t in (np.int8, np.int16, np.int32):
            if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max and (num == np.round(num)).all():
                return num.astype(t)
    return num.astype(np.float64, copy=False)


def _uniform(kind: np.ndarray) -> np.ndarray:
    """A column whose rows are all of one type keeps that type once (a read-only view)."""
    return np.broadcast_to(kind[:1], kind.shape) if len(kind) and (kind == kind[0]).all() else kind


class SampleTable(Sequence):
    """Every request's fields as columns; ``table[i]`` is the row as the world format's dict."""

    def __init__(self, intent_ids: list[str]):
        self.intent_ids = intent_ids
        self.intent_code = {iid: k for k, iid in enumerate(intent_ids)}
        self._ids, self._users, self._ts, self._split = [], [], array("q"), []
        self._chunks: list[tuple] = []  # (ids, users, splits) arrays of rows appended before, in order
        self._n = 0
        self.features: dict[str, FeatureColumn] = {}
        self.behavior, self.behavior_vocab = Ragged(), Vocab()
        self.candidates, self.clicked = Ragged(), Ragged()
        self._position: dict[str, int] | None = None
        self._cursor = 0  # the row position() found last

    # ---- building --------------------------------------------------------------------------------
    def append(self, sample_id: str, user_id: str, timestamp: int, features: dict, behavior, candidates, clicked,
               split: str | None) -> None:
        n = self._n
        self._n += 1
        self._ids.append(sample_id)
        self._users.append(user_id)
        self._ts.append(timestamp)
        self._split.append(split or "")
        for name, v in features.items():
            col = self.features.get(name)
            if col is None:
                col = self.features[name] = FeatureColumn()
            col.pad(n)
            col.append(v)
        self.behavior.append([self.behavior_vocab.code(b) for b in behavior or ()])
        self.candidates.append(None if candidates is None else [self.intent_code[c] for c in candidates])
        self.clicked.append([self.intent_code[c] for c in clicked])

    @property
    def n_appended(self) -> int:
        return self._n

    def _close_rows(self) -> None:
        if self._ids:
            self._chunks.append((np.array(self._ids), np.array(self._users), np.array(self._split, dtype="<U5")))
            self._ids, self._users, self._split = [], [], []

    def extend(self, sample_id: np.ndarray, user_id: np.ndarray, timestamp: np.ndarray, features: dict, behavior,
               candidates, clicked, split: np.ndarray | None) -> None:
        """Appends many checked rows at once (world/arrow_samples.py): ``features`` name -> (kind, num, code)
        arrays as :class:`FeatureColumn` keeps them; ``behavior``, ``candidates``, ``clicked`` as (offsets, codes,
        missing) for :meth:`Ragged.extend`, codes already in this table's vocabularies."""
        n, m = self._n, len(sample_id)
        self._close_rows()
        self._chunks.append((sample_id, user_id, np.full(m, "", "<U5") if split is None else split.astype("<U5")))
        self._ts.frombytes(timestamp.astype(np.int64).tobytes())
        for name, (kind, num, code) in features.items():
            if name not in self.features:
                self.features[name] = FeatureColumn()
            self.features[name].extend(n, kind, num, code)
        self.behavior.extend(*behavior)
        self.candidates.extend(*candidates)
        self.clicked.extend(*clicked)
        self._n += m

    def finish(self) -> "SampleTable":
        n = self._n
        self._close_rows()
        parts = list(zip(*self._chunks)) or [[np.array([], "<U1")]] * 3
        self.sample_id, self.user_id, self.split = (np.concatenate(p) for p in parts)
        self.split = self.split.astype("<U5")
        self.timestamp = np.frombuffer(self._ts, np.int64)
        for col in self.features.values():
            col.finish(n)
        self.behavior.finish(), self.candidates.finish(), self.clicked.finish()
        del self._ids, self._users, self._ts, self._split, self._chunks
        return self

    @classmethod
    def from_rows(cls, rows, intent_ids: list[str]) -> "SampleTable":
        table = cls(intent_ids)
        for s in rows:
            table.append(s["sample_id"], s["user_id"], s["timestamp"], s["features"], s.get("behavior"),
                         s.get("candidates"), s["clicked"], s.get("split"))
        return table.finish()

    # ---- reading ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.sample_id)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        cands = self.candidates.row(i)
        return {"sample_id": str(self.sample_id[i]), "user_id": str(self.user_id[i]), "timestamp": int(self.timestamp[i]),
                "features": {name: v for name, col in self.features.items() if (v := col.value(i)) is not None},
                "behavior": [self.behavior_vocab.values[c] for c in self.behavior.row(i)],
                "candidates": None if cands is None else [self.intent_ids[c] for c in cands],
                "clicked": [self.intent_ids[c] for c in self.clicked.row(i)], "split": str(self.split[i]) or None}

    def position(self, sample_id: str) -> int | None:
        """The row of ``sample_id``. Oracle and teacher files list requests in the samples' order: the row at or
        after the last one found is tried first, and an id -> row dict (~160 bytes a request: 1.2 GB at the
        paper's scale) is built only for a file in another order."""
        c = self._cursor
        for p in (c, c + 1, 0):  # 0: the next file starts again
            if p < len(self.sample_id) and self.sample_id[p] == sample_id:
                self._cursor = p
                return p
        if self._position is None:
            self._position = {s: i for i, s in enumerate(self.sample_id.tolist())}
        p = self._position.get(sample_id)
        self._cursor = c if p is None else p
        return p


class OracleTable(Mapping):
    """The oracle's rows (sample id -> {"probs", "needs", ...}) as columns, in the samples' order."""

    def __init__(self, samples: SampleTable):
        self.samples = samples
        self.row = np.full(len(samples), -1, np.int64)  # each sample's oracle row, -1: none
        self._sample, self.probs_intent, self.probs = array("q"), Ragged(), array("d")
        self.needs, self.need_vocab = Ragged(), Vocab()
        self.extra: list[str | None] = []  # any other fields (need_intent, segment, ...), as JSON
        self._same: dict[str, str] = {}     # one string object per distinct extra (a few hundred in ShopSim)

    def append(self, position: int, probs: dict, needs: list[str], extra: dict) -> None:
        self.row[position] = len(self._sample)
        self._sample.append(position)
        self.probs_intent.append([self.samples.intent_code[k] for k in probs])
        self.probs.extend(float(p) for p in probs.values())
        self.needs.append([self.need_vocab.code(x) for x in needs])
        text = json.dumps(extra, separators=(",", ":"), sort_keys=True) if extra else None
        self.extra.append(None if text is None else self._same.setdefault(text, text))

    def finish(self) -> "OracleTable":
        self.sample = np.frombuffer(self._sample, np.int64)
        self.probs = np.frombuffer(self.probs, np.float64)
        self.probs_intent.finish(), self.needs.finish()
        del self._sample, self._same
        return self

    def field_of_samples(self, name: str, default: str = "") -> np.ndarray:
        """[n_samples] a string field of every sample's oracle row (``default`` without one)."""
        cache = self.__dict__.setdefault("_fields", {})
        if name not in cache:
            uniq: dict[str | None, str] = {}
            per_row = [uniq.setdefault(x, default if x is None else str(json.loads(x).get(name, default)))
                       for x in self.extra]
            col = np.array([default] + per_row, dtype=object)
            cache[name] = col[self.row + 1]
        return cache[name]

    def needs_of(self, position: int) -> list[str]:
        """The needs the oracle names for the sample at ``position`` ([] without an oracle row)."""
        r = self.row[position]
        return [] if r < 0 else [self.need_vocab.values[c] for c in self.needs.row(r)]

    def __len__(self) -> int:
        return len(self.sample)

    def __iter__(self):
        return (str(self.samples.sample_id[p]) for p in self.sample)

    def __getitem__(self, sample_id: str) -> dict:
        p = self.samples.position(sample_id)
        r = -1 if p is None else self.row[p]
        if r < 0:
            raise KeyError(sample_id)
        lo, hi = self.probs_intent.offsets[r], self.probs_intent.offsets[r + 1]
        ids = self.samples.intent_ids
        return {"sample_id": sample_id, **json.loads(self.extra[r] or "{}"),
                "probs": {ids[k]: float(p) for k, p in zip(self.probs_intent.codes[lo:hi], self.probs[lo:hi])},
                "needs": [self.need_vocab.values[c] for c in self.needs.row(r)]}


class TeacherTable(Sequence):
    """Teacher rows (sample, teacher, query) as codes; ``table[i]`` is the row as a dict."""

    def __init__(self, samples: SampleTable):
        self.samples = samples
        self._sample, self._teacher, self._query = array("q"), array("i"), array("i")
        self.teacher_vocab, self.query_vocab = Vocab(), Vocab()

    def append(self, position: int, teacher: str, query: str) -> None:
        self._sample.append(position)
        self._teacher.append(self.teacher_vocab.code(teacher))
        self._query.append(self.query_vocab.code(query))

    def finish(self) -> "TeacherTable":
        self.sample = np.frombuffer(self._sample, np.int64)
        self.teacher = np.frombuffer(self._teacher, np.int32)
        self.query = np.frombuffer(self._query, np.int32)
        del self._sample, self._teacher, self._query
        return self

    def __len__(self) -> int:
        return len(self.sample)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return {"sample_id": str(self.samples.sample_id[self.sample[i]]), "teacher": self.teacher_vocab.values[self.teacher[i]],
                "query": self.query_vocab.values[self.query[i]]}

    def __iter__(self):
        ids = self.samples.sample_id
        for s, t, q in self.rows():
            yield {"sample_id": str(ids[s]), "teacher": t, "query": q}

    def rows(self):
        """(sample position, teacher, query) of every row, without building dicts."""
        tv, qv = self.teacher_vocab.values, self.query_vocab.values
        for s, t, q in zip(self.sample.tolist(), self.teacher.tolist(), self.query.tolist()):
            yield s, tv[t], qv[q]
