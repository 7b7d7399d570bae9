"""Turns a world's features (whatever their names and types) into integer fields for the user tower.

Strings and booleans get a vocabulary; numbers get quantile bins fitted on the training split. Unseen
values map to index 0. Behaviour is a bag of tokens. Fitted state is plain JSON, saved with the ranker.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..world.columns import FLOAT, INT, NONE

N_BINS = 8
MAX_BEHAVIOR = 8


@dataclass
class FeatureEncoder:
    fields: list[str] = field(default_factory=list)
    vocab: dict[str, dict[str, int]] = field(default_factory=dict)   # categorical fields
    bins: dict[str, list[float]] = field(default_factory=dict)       # numeric fields
    behavior_vocab: dict[str, int] = field(default_factory=dict)

    @classmethod
    def fit(cls, samples, rows=None) -> "FeatureEncoder":
        """Fitted on ``rows`` of ``samples`` (a world's SampleTable, or rows as dicts; default: all)."""
        table = _table(samples)
        rows = np.arange(len(table)) if rows is None else np.asarray(rows)
        enc = cls()
        for name in sorted(table.features):
            col = table.features[name]
            kind = col.kind[rows]
            numeric = (kind == INT) | (kind == FLOAT)
            values = col.num[rows][numeric].astype(np.float64)  # quantiles of narrow ints would overflow
            if numeric.any() and numeric.sum() == (kind != NONE).sum() and len(np.unique(values)) > N_BINS:
                edges = np.unique(np.quantile(values, np.linspace(0, 1, N_BINS + 1)[1:-1]))
                enc.bins[name] = [float(e) for e in edges]
            else:
                keys = set(col.distinct(rows)[0]) - {None}
                enc.vocab[name] = {k: i + 1 for i, k in enumerate(sorted(keys))}
        enc.fields = sorted(table.features)
        b, chosen = table.behavior, np.zeros(len(table), bool)
        chosen[rows] = True
        used = np.unique(b.codes[np.repeat(chosen, b.lengths)])
        tokens = sorted(table.behavior_vocab.values[c] for c in used)
        enc.behavior_vocab = {t: i + 1 for i, t in enumerate(tokens)}
        return enc

    def cardinalities(self) -> list[int]:
        return [len(self.vocab[f]) + 1 if f in self.vocab else len(self.bins[f]) + 2 for f in self.fields]

    def transform(self, samples) -> tuple[np.ndarray, np.ndarray]:
        """(fields [n, F] int32, behaviour [n, MAX_BEHAVIOR] int32 with 0 padding) of every row of ``samples``
        (a SampleTable, or rows as dicts); unseen values and features the table lacks give 0. int32: the
        paper's 7.5M requests x 90 fields are 2.7 GB of codes (RankerData.batch widens a batch to int64)."""
        table = _table(samples)
        n, rows = len(table), np.arange(len(table))
        x = np.zeros((n, len(self.fields)), dtype=np.int32)
        for j, name in enumerate(self.fields):
            col = table.features.get(name)
            if col is None:
                continue
            if name in self.bins:
                numeric = (col.kind == INT) | (col.kind == FLOAT)
                x[:, j] = np.where(numeric, np.searchsorted(self.bins[name], col.num, "right") + 1, 0)
            else:
                voc = self.vocab[name]
                keys, inverse = col.distinct(rows)  # missing (None) and unseen values: 0
                x[:, j] = np.array([voc.get(k, 0) for k in keys], np.int32)[inverse]
        b = table.behavior
        lookup = np.array([self.behavior_vocab.get(t, 0) for t in table.behavior_vocab.values] + [0], np.int32)
        take = np.minimum(b.lengths, MAX_BEHAVIOR)
        col = np.arange(MAX_BEHAVIOR)
        pos = (b.offsets[1:] - take)[:, None] + col[None, :]
        keep = col[None, :] < take[:, None]
        codes = np.full((n, MAX_BEHAVIOR), len(lookup) - 1, np.int64)
        codes[keep] = b.codes[pos[keep]]
        return x, lookup[codes]

    def to_json(self) -> dict:
        return {"fields": self.fields, "vocab": self.vocab, "bins": self.bins, "behavior_vocab": self.behavior_vocab}

    @classmethod
    def from_json(cls, d: dict) -> "FeatureEncoder":
        return cls(d["fields"], d["vocab"], d["bins"], d["behavior_vocab"])


def _table(samples):
    from ..world.columns import SampleTable

    if isinstance(samples, SampleTable):
        return samples
    intents = sorted({c for s in samples for c in (s.get("candidates") or []) + list(s["clicked"])})
    return SampleTable.from_rows(samples, intents)
