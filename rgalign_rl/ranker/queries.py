"""Query sources for QE-Rec: where each sample's latent query comes from, as an embedding matrix.

``none`` | ``teacher:NAME`` (that teacher's query, through the text encoder) | ``need`` (the oracle's
true-need text: the headroom ceiling) | ``reasoner:PATH`` (queries the reasoner generates, embedded by
its last token, the text encoder, or both).
"""
from __future__ import annotations

import numpy as np

from ..text_encoder import DIM as TEXT_DIM
from ..text_encoder import encode_texts
from ..world import World


def query_text_dims(mode: str) -> int:
    """How many trailing dims of a ``mode`` query embedding are the text encoder's vector of the query."""
    return 0 if mode == "last_token" else TEXT_DIM


class TextQueries:
    """[n, D] query vectors held as each request's code into the vectors of the distinct texts (code 0: no query,
    the zero vector): 7.5M requests' teacher queries are ~18k texts, 11.5 GB as one float32 array and ~58 MB so
    (codes 30 MB, vectors 28 MB).
    Reads like that array: ``q[idx]``, ``q.shape``, ``np.asarray(q)``."""

    def __init__(self, texts: list[str]):
        code: dict[str, int] = {"": 0}
        self.codes = np.fromiter((code.setdefault(t, len(code)) for t in texts), np.int32, len(texts))
        self.table = encode_texts(list(code))  # the encoder embeds each distinct text once, in sorted order

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.codes), self.table.shape[1]

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, idx) -> np.ndarray:
        return self.table[self.codes[idx]]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self.table[self.codes] if dtype is None else self.table[self.codes].astype(dtype)


def query_texts(world: World, spec: str) -> list[str]:
    if spec == "need":
        if not world.oracle:
            raise ValueError(f"--queries need: world {world.root} has no oracle.jsonl")
        return ["; ".join(world.oracle.needs_of(i)) for i in range(len(world.samples))]
    if spec.startswith("teacher:"):
        name = spec.split(":", 1)[1]
        rows = {i: q for i, t, q in (world.teachers.rows() if world.teachers else ()) if t == name}
        if not rows:
            known = sorted(world.teachers.teacher_vocab.values if world.teachers else [])
            raise ValueError(f"--queries {spec}: no such teacher in {world.root} (teachers: {', '.join(known) or 'none'})")
        return [rows.get(i, "") for i in range(len(world.samples))]
    raise ValueError(f"unknown query source {spec!r}: use none, need, teacher:NAME or reasoner:PATH")


def query_embeddings(world: World, spec: str, mode: str = "last_token", indices=None,
                     max_new_tokens: int = 16) -> np.ndarray | None:
    """[n_samples, D] query embeddings for a source spec, or None for ``none``. ``indices``: a reasoner
    source generates only those samples' queries (the other rows are zero), each up to ``max_new_tokens``."""
    if spec == "none":
        return None
    if spec.startswith("reasoner:"):
        from ..reasoner.queries import reasoner_query_embeddings

        return reasoner_query_embeddings(world, spec.split(":", 1)[1], mode, indices, max_new_tokens)
    return TextQueries(query_texts(world, spec))
