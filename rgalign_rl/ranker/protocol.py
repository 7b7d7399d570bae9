"""Bring your own ranker: what the loop asks of a ranker class (``ranker.class: package.module:Class``).

A ranker is a ``torch.nn.Module`` built as ``Class(cfg, text_emb)`` that scores each request's candidates::

    class MyRanker(torch.nn.Module):
        def __init__(self, cfg: RankerConfig, text_emb: torch.Tensor):  # sizes; [K, T] the intents' text vectors
            super().__init__()
            self.cfg = cfg
            self.register_buffer("text_emb", text_emb.float())
            ...
        def forward(self, x, behavior, cand, query=None):                  # -> [B, C] scores
            ...

- ``x`` [B, F] int64: one code per feature field, ``behavior`` [B, M] int64: the behaviour bag (0 pads), both
  from the ``FeatureEncoder`` saved in the ranker's folder (``cfg.cardinalities``, ``cfg.behavior_vocab``: their
  sizes); the ranker may encode them further its own way (hash, cross, look up).
- ``cand`` [B, C] intent indices (padding holds any valid index; the loop masks its scores).
- ``query`` [B, cfg.query_dim] float or None. As the production ranker (the ``two_tower`` stage) the class is
  built with ``cfg.query_dim == 0`` and gets None; QE-Rec then adds the gated query term on top of its score
  (:class:`~rgalign_rl.ranker.model.QERecOnTop`, ``ranker.nest: true``). With ``ranker.nest: false`` QE-Rec is
  the class itself, built with ``cfg.query_dim > 0`` (the trailing ``cfg.query_text`` dims are the query's
  text-encoder vector, in the space of ``text_emb``); it should still score when given None.
- Optional ``user_embedding(x, behavior) -> [B, d]``: where the reward looks for a request's nearest training
  requests; without one, the ranker's distribution over every intent stands in.

The loop trains it (ListNet + KL, early stopping on valid GAUC), and saves and loads it as it does its own:
a folder with ``model.safetensors`` (the state dict, ``text_emb`` included) and ``config.json`` (``ranker``: the
cfg, ``features``: the encoder, ``class``: the class path); ``load_ranker`` rebuilds ``Class(cfg, text_emb)``
from it. ``examples/my_ranker.py`` is one written outside the package.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Protocol, runtime_checkable

import torch
import torch.nn as nn

from .model import ARCHS, QERecOnTop, RankerConfig


@runtime_checkable
class Ranker(Protocol):
    cfg: RankerConfig
    text_emb: torch.Tensor

    def forward(self, x: torch.Tensor, behavior: torch.Tensor, cand: torch.Tensor,
                query: torch.Tensor | None = None) -> torch.Tensor:
        ...


BUILT_IN = "rgalign_rl.ranker.model:TwoTowerRanker"


def class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def resolve_ranker_class(path: str | None) -> type | None:
    """The class ``package.module:Class`` names, checked against the protocol; None for the built-in two-tower
    (``path`` None or naming it). ``ValueError`` saying what is wrong (the config check adds the key)."""
    if path is None or path == BUILT_IN:
        return None
    module, sep, name = path.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"{path!r} is not package.module:Class")
    try:
        obj = importlib.import_module(module)
    except Exception as e:  # a missing module, or one that fails on import
        raise ValueError(f"{path!r}: cannot import {module} ({type(e).__name__}: {e}); is it on PYTHONPATH?") from None
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ValueError(f"{path!r}: module {module} has no {name}")
    if obj in ARCHS.values() or obj is QERecOnTop:
        raise ValueError(f"{path!r}: a built-in ranker; leave ranker.class unset and choose it with ranker.arch")
    problem = _protocol_problem(obj)
    if problem:
        raise ValueError(f"{path!r}: {problem} (the ranker protocol: rgalign_rl/ranker/protocol.py, "
                         "docs/rankers-and-rewards.md)")
    return obj


def _protocol_problem(cls) -> str | None:
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        return "not a torch.nn.Module class"
    if cls.forward is nn.Module.forward:
        return "defines no forward(x, behavior, cand, query=None)"
    try:
        inspect.signature(cls.forward).bind(None, "x", "behavior", "cand")
        inspect.signature(cls.forward).bind(None, "x", "behavior", "cand", "query")
    except TypeError:
        return f"forward{inspect.signature(cls.forward)} does not take (x, behavior, cand, query=None)"
    try:
        inspect.signature(cls.__init__).bind(None, "cfg", "text_emb")
    except TypeError:
        return f"__init__{inspect.signature(cls.__init__)} does not take (cfg, text_emb)"
    return None


def class_of(model: nn.Module) -> tuple[type | None, bool]:
    """(the ranker class of one's own inside ``model``, or None for a built-in; whether QE-Rec's query term
    sits on top of it)."""
    if isinstance(model, QERecOnTop):
        return type(model.base), True
    return (None if type(model) in ARCHS.values() else type(model)), False


def user_vectors(model: nn.Module, x: torch.Tensor, behavior: torch.Tensor) -> torch.Tensor:
    """[B, d] a request in the ranker's user space: its ``user_embedding``, or its distribution over every intent
    (no query) where it has none."""
    inner = model.base if isinstance(model, QERecOnTop) else model
    if hasattr(inner, "user_embedding"):
        return inner.user_embedding(x, behavior)
    every = torch.arange(model.cfg.n_intents, device=x.device).expand(len(x), -1)
    return torch.softmax(inner(x, behavior, every, None), dim=-1)
