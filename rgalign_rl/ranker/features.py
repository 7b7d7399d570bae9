"""Turns a world's features (whatever their names and types) into integer fields for the user tower.

Strings and booleans get a vocabulary; numbers get quantile bins fitted on the training split. Unseen
values map to index 0. Behaviour is a bag of tokens. Fitted state is plain JSON, saved with the ranker.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

N_BINS = 8
MAX_BEHAVIOR = 8


@dataclass
class FeatureEncoder:
    fields: list[str] = field(default_factory=list)
    vocab: dict[str, dict[str, int]] = field(default_factory=dict)   # categorical fields
    bins: dict[str, list[float]] = field(default_factory=dict)       # numeric fields
    behavior_vocab: dict[str, int] = field(default_factory=dict)

    @classmethod
    def fit(cls, samples: list[dict]) -> "FeatureEncoder":
        enc = cls()
        names = sorted({k for s in samples for k in s["features"]})
        for name in names:
            values = [s["features"].get(name) for s in samples]
            numeric = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if numeric and len(numeric) == len([v for v in values if v is not None]) and len(set(numeric)) > N_BINS:
                edges = np.unique(np.quantile(numeric, np.linspace(0, 1, N_BINS + 1)[1:-1]))
                enc.bins[name] = [float(e) for e in edges]
            else:
                enc.vocab[name] = {k: i + 1 for i, k in enumerate(sorted({_key(v) for v in values if v is not None}))}
        enc.fields = names
        tokens = sorted({b for s in samples for b in s["behavior"]})
        enc.behavior_vocab = {t: i + 1 for i, t in enumerate(tokens)}
        return enc

    def cardinalities(self) -> list[int]:
        return [len(self.vocab[f]) + 1 if f in self.vocab else len(self.bins[f]) + 2 for f in self.fields]

    def transform(self, samples: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        """(fields [n, F] int64, behaviour [n, MAX_BEHAVIOR] int64 with 0 padding)."""
        x = np.zeros((len(samples), len(self.fields)), dtype=np.int64)
        for j, name in enumerate(self.fields):
            col = [s["features"].get(name) for s in samples]
            if name in self.bins:
                arr = np.array([np.nan if v is None or isinstance(v, (str, bool)) else v for v in col], dtype=float)
                x[:, j] = np.where(np.isnan(arr), 0, np.searchsorted(self.bins[name], np.nan_to_num(arr), "right") + 1)
            else:
                voc = self.vocab[name]
                x[:, j] = [0 if v is None else voc.get(_key(v), 0) for v in col]
        b = np.zeros((len(samples), MAX_BEHAVIOR), dtype=np.int64)
        for i, s in enumerate(samples):
            toks = [self.behavior_vocab.get(t, 0) for t in s["behavior"][-MAX_BEHAVIOR:]]
            b[i, : len(toks)] = toks
        return x, b

    def to_json(self) -> dict:
        return {"fields": self.fields, "vocab": self.vocab, "bins": self.bins, "behavior_vocab": self.behavior_vocab}

    @classmethod
    def from_json(cls, d: dict) -> "FeatureEncoder":
        return cls(d["fields"], d["vocab"], d["bins"], d["behavior_vocab"])


def _key(v) -> str:
    return f"{type(v).__name__}:{v}"
