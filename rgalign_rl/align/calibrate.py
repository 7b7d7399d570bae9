"""Closed-loop calibration: refresh QE-Rec on the aligned reasoner's embeddings.

The aligned reasoner becomes the new embedding snapshot: it re-generates every request's query (the
serving path) and re-embeds it; QE-Rec is fine-tuned from the previous ranker on these embeddings,
with λ·KL to the previous ranker's candidate distribution so that a round cannot undo what the last
one learned. The KL's reference is the previous ranker reading the *new* queries (``kl_inputs="new"``, the
default): read on the old queries (``"old"``) it pulled the final back towards the warm reasoner's queries
and cost the control, whose queries do not change, nothing (DESIGN.md s.9).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .. import dist
from ..faults import kill_point
from ..ranker.protocol import class_of
from ..ranker.queries import query_embeddings
from ..ranker.train import TrainConfig, load_ranker, save_ranker, train_ranker


def calibrate(world, reasoner_path: str | Path, prev_ranker_dir: str | Path, out: str | Path,
              kl_weight: float = 0.5, epochs: int = 8, seed: int = 0, log=print,
              train: TrainConfig | None = None, max_requests: int | None = None, max_new_tokens: int = 16,
              kl_inputs: str = "new", fit_indices=None, stop_indices=None) -> Path:
    """``max_requests``: fine-tune on that many training requests (sampled by ``seed``), so only they and
    the valid split are re-generated; None: the whole train split. Queries up to ``max_new_tokens`` (the
    loop's, so the ranker reads what it will be served). ``kl_inputs``: the KL reference reads the new
    queries (``new``) or the ones the previous ranker was trained on (``old``). ``fit_indices`` /
    ``stop_indices``: fine-tune on / early-stop on these requests instead (experiments/calibration_split.py)."""
    if kl_inputs not in ("new", "old"):
        raise ValueError(f"config key ranker.calib_kl_inputs: {kl_inputs!r} is not one of new, old")
    prev, enc, meta = load_ranker(prev_ranker_dir)
    mode = meta.get("query_mode", "last_token")
    spec = f"reasoner:{reasoner_path}"
    subset = world.indices("train") if fit_indices is None else np.asarray(fit_indices)
    if fit_indices is None and max_requests is not None and max_requests < len(subset):
        subset = np.sort(np.random.default_rng(seed).choice(subset, max_requests, replace=False))
    query = query_embeddings(world, spec, mode, np.concatenate([subset, world.indices("valid")]), max_new_tokens)
    # the previous ranker's queries as it was trained on them (only for kl_inputs="old")
    prev_query = (query_embeddings(world, meta["queries"], mode, max_new_tokens=meta.get("max_new_tokens", 16))
                  if kl_inputs == "old" and kl_weight > 0 else query)

    def fine_tune() -> Path:  # the main process trains and writes; the others wait for its path
        # a nested QE-Rec keeps its two-tower towers frozen here too: retraining them overfits (BENCHMARKS.md)
        init = prev if query.shape[1] == prev.cfg.query_dim else None
        cfg = dataclasses.replace(train or TrainConfig(), epochs=epochs, kl_weight=kl_weight, seed=seed)
        model, new_enc, history = train_ranker(world, prev.cfg.arch, query, cfg, reference=prev, ref_query=prev_query,
                                               init=init, encoder=enc, log=log, train_indices=subset,
                                               stop_indices=stop_indices,
                                               query_text=prev.cfg.query_text, ranker_class=class_of(prev)[0],
                                               frozen_towers=init is not None and bool(meta.get("nested_in")))
        kill_point("calibrate.trained")
        return save_ranker(out, model, new_enc, {"queries": spec, "query_mode": mode, "history": history,
                                                 "nested_in": meta.get("nested_in"),
                                                 "calibrated_from": str(prev_ranker_dir), "kl_weight": kl_weight,
                                                 "train_requests": len(subset), "max_new_tokens": max_new_tokens,
                                                 "kl_inputs": kl_inputs})

    return dist.on_main(fine_tune)
