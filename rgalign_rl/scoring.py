"""The frozen ranker as a scorer of candidate queries: what every reward in ``reward/`` builds on.

For a batch of (request, query) pairs it returns a distribution over each request's candidates and a
denoised click target:
- the distribution mixes the frozen QE-Rec's softmax with a text anchor, softmax(cos(query text,
  intent text) / tau) through the shared text encoder, so that a query's *meaning* counts and not only
  a path fitted on (teacher query, click) pairs, which inherits the teachers' biases (DESIGN.md s.7);
- the target averages the click distributions of the request and its k nearest training requests: one
  click is a random draw, and a winner picked on it has often only guessed that draw (DESIGN.md s.6).
  Nearest in the ranker's user space (``user``), or in that space joined with the text of the request's
  teacher queries (``user+teachers``, training material of train/valid requests only): a rare need's
  nearest users mostly carry other needs, so their clicks point the target at a frequent neighbour's
  intents and the reward picks that neighbour's phrase (BENCHMARKS.md section 3: the reward's neighbours).
Everything is batched: one text-encoder pass, one reasoner pass and one ranker pass per call.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch

from .ranker.protocol import user_vectors
from .ranker.train import NEG, RankerData, load_ranker
from .neighbours import KINDS, NeighbourIndex
from .config import Annotated, NonNegative, OneOf, Positive, Share, check_fields
from .text_encoder import BACKENDS, encode_texts
from .world import World


SPACES = ("user", "user+teachers")  # where a request's nearest training requests are found


@dataclass
class ScorerConfig:
    # k nearest training requests whose clicks denoise the target (0 = own click)
    neighbours: Annotated[int, NonNegative] = 20
    neighbour_space: Annotated[str, OneOf(SPACES)] = "user+teachers"  # user | user+teachers: where "nearest" is measured
    # exact | ivf (a faiss IVF-SQ8 index: approximate, for millions of training requests) | auto: ivf above 200k
    neighbour_index: Annotated[str, OneOf(KINDS)] = "auto"
    neighbour_probe: Annotated[int, Positive] = 16  # ivf: inverted lists (of ~1,024 training requests) read per search
    anchor_weight: Annotated[float, Share] = 0.5  # share of the text anchor in the candidate distribution
    anchor_temperature: Annotated[float, Positive] = 0.05
    # the completions' text encoder: torch (float32, the reference) | onnx (ONNX Runtime, the same vectors to ~1e-6,
    # ~1.3x) | onnx_int8 (int8 weights, ~2x; rewards move, and depend on which completions share a call: BENCHMARKS.md
    # section 5). CPU; a GPU uses torch
    text_encoder: Annotated[str, OneOf(BACKENDS)] = "torch"
    batch_size: Annotated[int, Positive] = 1024
    # the frozen ranker the reward reads: a ranker folder (save_ranker's, of any ranker class: ranker/protocol.py);
    # None: the loop's current QE-Rec (qe_rec, then each calibration's)
    ranker: str | None = None

    def __post_init__(self) -> None:  # built in code too (the loader has checked a config file's values already)
        check_fields(self, "reward.scorer")
        if self.text_encoder != "torch" and not all(map(find_spec, ("onnxruntime", "onnx"))):
            raise ValueError(f"reward.scorer.text_encoder: {self.text_encoder} needs pip install 'rgalign_rl[onnx]'")


class FrozenRankerScorer:
    def __init__(self, world: World, ranker_dir: str | Path | None, cfg: ScorerConfig | None = None,
                 test_targets: bool = False):
        """``ranker_dir``: the frozen ranker's folder, unless ``cfg.ranker`` names one (which then wins).
        ``test_targets``: test requests get the target of their nearest training requests' clicks (their
        own are never read) instead of none: ``rgalign diagnose`` asks whether the reward predicts the test
        ranking; no training stage may set it."""
        self.world, self.cfg, self.test_targets = world, cfg or ScorerConfig(), test_targets
        ranker_dir = self.cfg.ranker or ranker_dir
        self.model, self.encoder, self.meta = load_ranker(ranker_dir)
        if self.model.cfg.n_intents != len(world.intents):
            raise ValueError(f"ranker {ranker_dir} ranks {self.model.cfg.n_intents} intents, world {world.root} has "
                             f"{len(world.intents)}: a ranker trained on another world")
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.data = RankerData(world, self.encoder, None)
        self.text_emb = self.model.text_emb  # the intents' text vectors (any ranker class keeps them)
        self.query_source, self.query_mode = self.meta.get("queries", "none"), self.meta.get("query_mode", "text")
        self._reasoner = self._cache = None
        # targets are computed per request on first use and kept: an evaluation reads 3k valid rows, and a
        # request's k nearest neighbours among ~36k training requests are most of a target's cost
        self._target = torch.zeros(len(world.samples), world.candidates[0].shape[1])
        self._have = np.zeros(len(world.samples), bool)

    # ---- targets -------------------------------------------------------------------------------
    @torch.no_grad()
    def _user_embeddings(self, rows: np.ndarray) -> torch.Tensor:
        """[len(rows), d] unit user vectors of ``rows`` (world sample indices), in blocks of 4096."""
        dev = self.text_emb.device
        out = [user_vectors(self.model, *self.data.batch(torch.as_tensor(rows[i : i + 4096]), dev)[:2]).cpu()
               for i in range(0, len(rows), 4096)]
        return torch.nn.functional.normalize(torch.cat(out), dim=-1)

    @cached_property
    def _teacher_queries(self) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """Each train/valid request's teacher queries (no stage reads test requests' teacher rows): (offsets [n+1]
        into codes, codes [rows] into the text vectors, text vectors [distinct queries, D]); queries in file order.
        A request is a few rows of a few thousand distinct texts: vectors per text, not per request (11 GB at 7.5M)."""
        n, t = len(self.world.samples), self.world.teachers
        sample, query, texts = np.zeros(0, np.int64), np.zeros(0, np.int32), []
        if t is not None:
            keep = self.world.split[t.sample] != "test"
            sample, query = t.sample[keep], t.query[keep]
        used = np.unique(query)
        if len(used):
            texts = [t.query_vocab.values[c] for c in used]
        vec = torch.from_numpy(encode_texts(texts)) if texts else torch.zeros(0, self.text_emb.shape[1])
        by_request = np.argsort(sample, kind="stable")
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(sample, minlength=n), out=offsets[1:])
        return offsets, np.searchsorted(used, query[by_request]), vec

    def _teacher_text(self, rows: np.ndarray) -> torch.Tensor:
        """[len(rows), D] unit mean text vector of each request's teacher queries (zero where it has none); rows
        with the same number of queries are averaged together."""
        offsets, codes, vec = self._teacher_queries
        out = torch.zeros(len(rows), vec.shape[1])  # on CPU, like the neighbour space
        counts = offsets[rows + 1] - offsets[rows]
        for m in np.unique(counts[counts > 0]):
            at = np.flatnonzero(counts == m)
            out[at] = vec[torch.from_numpy(codes[offsets[rows[at], None] + np.arange(m)])].mean(1)
        return torch.nn.functional.normalize(out, dim=-1)

    def _space_of(self, rows: np.ndarray) -> torch.Tensor:
        """[len(rows), D] ``rows`` in the neighbour space."""
        emb = self._user_embeddings(rows)
        if self.cfg.neighbour_space == "user+teachers":
            emb = torch.nn.functional.normalize(torch.cat([emb, self._teacher_text(rows)], 1), dim=-1)
        return emb

    @cached_property
    def _index(self) -> NeighbourIndex:
        return NeighbourIndex(self.world.indices("train"), self._space_of, self.cfg.neighbour_index,
                              self.cfg.neighbour_probe, seed=0)

    def nearest_training(self, k: int, rows=None, exact: bool = False) -> np.ndarray:
        """[len(rows), k] the k nearest training requests of each of ``rows`` (default: every request; world
        sample indices) in the neighbour space; a request is not its own neighbour. ``exact``: an exhaustive
        search even where the index is approximate (the yardstick of its recall)."""
        rows = np.arange(len(self.world.samples)) if rows is None else np.asarray(rows, np.int64)
        return self._index.search(rows, k, exact=exact)

    def neighbour_recall(self, rows) -> float:
        """Share of the exact nearest training requests of ``rows`` that ``nearest_training`` finds (1.0 when the
        index is exact): the approximate index's yardstick."""
        return self._index.recall(np.asarray(rows, np.int64), self.cfg.neighbours)

    def _clicks(self, rows: np.ndarray) -> np.ndarray:
        """[*rows.shape, K] each train/valid request's click distribution over all intents (test clicks are never
        read); dense for the rows asked for only (all rows' would be 6 GB at 7.5M requests)."""
        w, flat = self.world, rows.reshape(-1)
        c = w.samples.clicked
        lengths = (c.offsets[flat + 1] - c.offsets[flat]) * (w.split[flat] != "test")
        at = np.repeat(np.arange(len(flat)), lengths)
        begin = c.offsets[flat] - (np.cumsum(lengths) - lengths)  # a row's first click, less where its run starts in `at`
        codes = c.codes[np.repeat(begin, lengths) + np.arange(len(at))]
        clicks = np.zeros((len(flat), len(w.intents)), np.float32)
        clicks[at, codes] = 1.0 / lengths[at]
        return clicks.reshape(*rows.shape, -1)

    def target(self, idx) -> torch.Tensor:
        """[len(idx), C] denoised target click distribution over each request's candidates: its own clicks
        pooled with those of its k nearest training requests (test requests get none, unless ``test_targets``:
        then their neighbours' only; no stage may read their clicks)."""
        idx = np.array(idx, dtype=np.int64)  # a copy: torch reads no negative strides
        todo = np.unique(idx[~self._have[idx]])
        if len(todo):
            w, k = self.world, self.cfg.neighbours
            ids, mask = w.candidates
            t = np.empty(ids[todo].shape, np.float32)
            for a in range(0, len(todo), 65_536):  # neighbours for 64k rows at a time
                rows = todo[a : a + 65_536]
                near = self.nearest_training(k, rows) if k > 0 else None
                for b in range(0, len(rows), 1024):  # dense clicks a block at a time: [1024, k, K]
                    block = rows[b : b + 1024]
                    pooled = self._clicks(block)
                    if near is not None:
                        pooled += self._clicks(near[b : b + 1024]).sum(1)
                    picked = np.take_along_axis(pooled, np.maximum(ids[block], 0), axis=1)
                    t[a + b : a + b + len(block)] = picked * mask[block]
            if not self.test_targets:
                t[w.split[todo] == "test"] = 0.0
            total = t.sum(1, keepdims=True)
            self._target[todo] = torch.from_numpy(np.where(total > 0, t / np.maximum(total, 1e-12), 0.0).astype(np.float32))
            self._have[todo] = True
        return self._target[torch.as_tensor(idx)]

    @property
    def targets(self) -> torch.Tensor:
        """[n, C] the target of every request (computes all that are not yet known)."""
        return self.target(np.arange(len(self.world.samples)))

    # ---- scoring -------------------------------------------------------------------------------
    def indices(self, sample_ids) -> np.ndarray:
        pos = [self.world.samples.position(s) for s in sample_ids]
        if None in pos:
            raise KeyError(f"sample_id {sample_ids[pos.index(None)]!r} is not in world {self.world.root}")
        return np.array(pos)

    def _query_embedding(self, prompts: list[str], queries: list[str], text: np.ndarray) -> torch.Tensor | None:
        if self.model.cfg.query_dim == 0:  # a two-tower reads no query
            return None
        if not self.query_source.startswith("reasoner:") or self.query_mode == "text":
            return torch.from_numpy(text)
        from .reasoner.model import EmbeddingCache, serving_reasoner

        path = self.query_source.split(":", 1)[1]
        if self._cache is None:  # the frozen snapshot the ranker was trained with, and its embedding cache
            self._reasoner, self._cache = serving_reasoner(path), EmbeddingCache(path)
        # what an evaluation has just embedded for its test metrics (its valid queries) is read, not embedded again
        last = self._cache.read(*self._reasoner, prompts, queries)
        return torch.from_numpy(last if self.query_mode == "last_token" else np.concatenate([last, text], 1))

    @torch.no_grad()
    def distribution(self, idx: np.ndarray, prompts: list[str], queries: list[str]) -> torch.Tensor:
        """[B, C] probability of each candidate given the query (padding gets 0)."""
        text = encode_texts(queries, cache=False, backend=self.cfg.text_encoder)  # mostly new: no disk cache
        q = self._query_embedding(prompts, queries, text)
        j, dev = torch.as_tensor(idx), self.text_emb.device  # the ranker's device
        x, b, cand, _ = self.data.batch(j, dev)
        mask = self.data.mask[j].to(dev)
        scores = self.model(x, b, cand, None if q is None else q.to(dev)).masked_fill(~mask, NEG)
        p = torch.softmax(scores, dim=-1)
        a = self.cfg.anchor_weight
        if a > 0:
            cos = torch.from_numpy(text).to(dev) @ self.text_emb.T           # [B, K]
            anchor = torch.gather(cos, 1, cand) / self.cfg.anchor_temperature
            p = (1 - a) * p + a * torch.softmax(anchor.masked_fill(~mask, NEG), dim=-1)
        return (p * mask).cpu()
