"""Token batches for generation and last-token embedding, with every prompt's shared head computed once.

A real LLM's prompt is mostly the same for every request: the chat template's system turn, the instruction
and the legend of what each field means (``prompt.HEAD_END`` closes it). Its keys and values are computed
once per call and copied into every batch, so a request pays only for its own tail (the field values):
for SmolLM2 on the ShopSim world, ~130 of ~560 tokens (BENCHMARKS.md section 5).

Determinism (batching.py's rule) holds: a row's numbers depend on the row alone. Rows are grouped by head and
tail width; a tail is left-padded to a multiple of ``PAD_MULTIPLE`` tokens (masked, between head and tail),
a width fixed by the row's own length, so real tokenizers' many distinct lengths still fill batches.
Prompts without a head (the tiny preset's compact style) keep exact lengths and no padding, as before.
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass

import numpy as np
import torch

from ..batching import length_batches
from .prompt import HEAD_END
from .tokens import prompt_ids

PAD_MULTIPLE = 8  # tail widths round up to this: ~4 padded tokens per row on average, batches ~8x fuller
REUSE_HEADS = True  # False: every prompt whole, at its exact length (bench/generation_speed.py's "before")


@dataclass
class Batch:
    rows: np.ndarray        # row indices into the call's sequences
    head: tuple[int, ...]   # token ids of the shared head (empty: none)
    width: int              # tail width after padding


def row_heads(tok, prompts: list[str], seqs: list[list[int]]) -> list[tuple[int, ...]]:
    """Per row, the token ids of its prompt's head (up to and including ``HEAD_END``), or () when the prompt
    has none or its tokens do not start with the head's own tokens (a merge across the boundary)."""
    heads = {}
    for p in set(prompts):
        cut = p.find(HEAD_END) if REUSE_HEADS else -1
        heads[p] = tuple(prompt_ids(tok, [p[: cut + len(HEAD_END)]])[0]) if cut >= 0 else ()
    return [heads[p] if heads[p] and tuple(s[: len(heads[p])]) == heads[p] else ()
            for p, s in zip(prompts, seqs)]


def plan(tok, prompts: list[str], seqs: list[list[int]], batch_size: int) -> list[Batch]:
    """Batches of rows sharing head and tail width (``prompts[r]`` is row r's prompt, ``seqs[r]`` its tokens)."""
    heads = row_heads(tok, prompts, seqs)
    widths = [len(s) - len(h) if not h else -(-(len(s) - len(h)) // PAD_MULTIPLE) * PAD_MULTIPLE
              for s, h in zip(seqs, heads)]
    groups = {key: g for g, key in enumerate(sorted(set(zip(heads, widths)), key=lambda k: (len(k[0]), k[1], k[0])))}
    keys = [groups[k] for k in zip(heads, widths)]
    return [Batch(b, heads[b[0]], widths[b[0]]) for b in length_batches(keys, batch_size)]


def _cache_kwarg(model) -> str:
    """transformers 5.2x renamed ``past_key_values`` to ``cache``; use whichever this model's forward takes."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params and "past_key_values" not in params else "past_key_values"


class HeadCaches:
    """Keys and values of each head, computed once per call and copied per batch (generate() extends them)."""

    def __init__(self, model):
        self.model, self.kw, self.caches = model, _cache_kwarg(model), {}

    def for_batch(self, head: tuple[int, ...], n: int):
        from transformers import DynamicCache

        if head not in self.caches:
            cache = DynamicCache(config=self.model.config)
            self.model(input_ids=torch.tensor([head], device=self.model.device), use_cache=True,
                       logits_to_keep=1, **{self.kw: cache})
            self.caches[head] = cache
        cache = copy.deepcopy(self.caches[head])
        cache.batch_repeat_interleave(n)
        return {self.kw: cache}


def batch_inputs(batch: Batch, seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) over head + padded tail: pads sit between head and tail, masked."""
    h, rows, masks = list(batch.head), [], []
    for r in batch.rows:
        tail = seqs[r][len(h):]
        pad = batch.width - len(tail)
        rows.append(h + [pad_id] * pad + tail)
        masks.append([1] * len(h) + [0] * pad + [1] * len(tail))
    return torch.tensor(rows, device=device), torch.tensor(masks, device=device)
