"""The k nearest training requests of a request: what the reward's denoised targets pool clicks over.

Exact search compares every asked row with every training request: [rows x train] similarities, fine for the
published worlds (36k training requests) and ~45 minutes for 100k rows against the paper scale's 5M. There a
faiss inverted-file index with 8-bit scalar codes (IVF-SQ8) is built once: its centroids trained on a sample,
the bank added a block at a time (never held in float32: 5M x 416 x 4 = 8 GB), and a search reads ``probe`` of
its lists of ~1,024 requests. ``recall`` measures it against exact search on a sample, streaming the bank in blocks.
Vectors are unit length and "nearest" is the largest inner product (cosine), in both searches.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

KINDS = ("auto", "exact", "ivf")
EXACT_UP_TO = 200_000  # auto: exact search up to this many training requests (the `large` world: ~130k)
BLOCK = 65_536          # bank rows embedded at a time when streaming
LIST = 1024             # ivf: training requests per inverted list (a search reads `probe` lists: its cost stays flat)


class NeighbourIndex:
    def __init__(self, bank: np.ndarray, embed: Callable[[np.ndarray], torch.Tensor], kind: str = "auto",
                 probe: int = 16, seed: int = 0):
        """``bank``: the searchable rows (world sample indices of the training split); ``embed(rows)``: [len(rows),
        D] unit vectors of any rows. ``kind``: exact | ivf | auto (exact up to EXACT_UP_TO bank rows)."""
        if kind not in KINDS:
            raise ValueError(f"reward.scorer.neighbour_index: {kind!r} is not one of {', '.join(KINDS)}")
        self.bank, self.embed, self.probe, self.seed = np.asarray(bank, np.int64), embed, probe, seed
        self.kind = ("exact" if len(self.bank) <= EXACT_UP_TO else "ivf") if kind == "auto" else kind
        self._vectors = self._ivf = None

    def search(self, rows: np.ndarray, k: int, exact: bool = False) -> np.ndarray:
        """[len(rows), k] world indices of each row's k nearest bank rows, nearest first; a row is never its own
        neighbour. ``exact``: exhaustive even where the index is approximate."""
        rows = np.asarray(rows, np.int64)
        if len(rows) == 0:
            return np.zeros((0, k), np.int64)
        others = len(self.bank) - int(np.isin(rows, self.bank).any())
        if k > others:
            raise ValueError(f"reward.scorer.neighbours: {k} nearest asked, the training split has {len(self.bank)}")
        if self.kind == "exact" or exact:
            return self._exact(rows, k)
        return self._approximate(rows, k)

    # ---- exact ----------------------------------------------------------------------------------
    def _exact(self, rows: np.ndarray, k: int) -> np.ndarray:
        """Every row against the bank, 2048 rows at a time: the bank held whole when the index is exact, else
        streamed once in blocks, each block's top k merged into the rows' running top k."""
        if self.kind == "exact" and self._vectors is None:
            self._vectors = self.embed(self.bank)
        bank, q = torch.from_numpy(self.bank), self.embed(rows)
        best = [None] * len(range(0, len(rows), 2048))  # per block of rows: (similarities [b, k], bank positions)
        for start, vec in [(0, self._vectors)] if self.kind == "exact" else self._stream():
            for j, s in enumerate(range(0, len(rows), 2048)):
                r = torch.from_numpy(rows[s : s + 2048])
                sim = q[s : s + 2048] @ vec.T
                sim[bank[start : start + len(vec)].unsqueeze(0) == r.unsqueeze(1)] = -2.0
                top = sim.topk(min(k, sim.shape[1]), dim=1)
                if best[j] is None:
                    best[j] = (top.values, top.indices + start)
                else:  # merge with the blocks before
                    values, at = torch.cat([best[j][0], top.values], 1), torch.cat([best[j][1], top.indices + start], 1)
                    keep = values.topk(k, dim=1)
                    best[j] = (keep.values, torch.gather(at, 1, keep.indices))
        return np.concatenate([bank[at].numpy() for _, at in best])

    def _stream(self):
        for start in range(0, len(self.bank), BLOCK):
            yield start, self.embed(self.bank[start : start + BLOCK])

    # ---- approximate (faiss) ------------------------------------------------------------------------
    def _build(self) -> None:
        import faiss  # only where the index is approximate

        faiss.omp_set_num_threads(torch.get_num_threads())
        n = len(self.bank)
        lists = max(1, n // LIST)
        rng = np.random.default_rng(self.seed)
        # >= 39 per list for the centres (faiss's floor), >= 64k for the 8-bit codes' ranges
        sample = np.sort(rng.choice(self.bank, min(n, max(40 * lists, 65_536)), replace=False))
        first = self.embed(sample).numpy()
        # the lists' centres found through a graph (HNSW), not compared one by one: adding and searching n
        # requests then costs ~n, where a flat comparison with n / LIST centres costs ~n^2 (1e13 at 5M)
        ivf = faiss.index_factory(first.shape[1], f"IVF{lists}_HNSW32,SQ8", faiss.METRIC_INNER_PRODUCT)
        ivf.train(first)
        for _, vec in self._stream():
            ivf.add(vec.numpy())
        self._ivf = ivf
        self._read(self.probe)

    def _read(self, lists: int) -> None:
        """Search ``lists`` inverted lists (the graph over the centres asked for twice as many candidates)."""
        import faiss

        self._ivf.nprobe = min(lists, self._ivf.nlist)
        faiss.downcast_index(self._ivf.quantizer).hnsw.efSearch = max(16, 2 * self._ivf.nprobe)

    def _approximate(self, rows: np.ndarray, k: int) -> np.ndarray:
        if self._ivf is None:
            self._build()
        out = np.empty((len(rows), k), np.int64)
        for s in range(0, len(rows), BLOCK):
            r = rows[s : s + BLOCK]
            _, pos = self._ivf.search(self.embed(r).numpy(), k + 1)
            out[s : s + len(r)] = self._keep(r, pos, k)
        return out

    def _keep(self, rows: np.ndarray, pos: np.ndarray, k: int) -> np.ndarray:
        """The first k found that are not the row itself (faiss marks a missing result -1). Rows whose probed
        lists held fewer than k others are searched again over every list, and any still short (the graph over
        the centres need not reach every list) exhaustively."""
        found, ok = self._found(rows, pos)
        short = np.flatnonzero(ok.sum(1) < k)
        if len(short):
            self._read(self._ivf.nlist)
            _, again = self._ivf.search(self.embed(rows[short]).numpy(), k + 1)
            self._read(self.probe)
            found[short], ok[short] = self._found(rows[short], again)
        first_k = np.argsort(~ok, axis=1, kind="stable")[:, :k]  # stable: nearest first among the kept
        out = np.take_along_axis(found, first_k, 1)
        still = np.flatnonzero(ok.sum(1) < k)
        if len(still):
            out[still] = self._exact(rows[still], k)
        return out

    def _found(self, rows: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(world indices of faiss positions, -1 where none; whether each is a neighbour: found and not the row)."""
        found = np.where(pos >= 0, self.bank[np.maximum(pos, 0)], -1)
        return found, (found != rows[:, None]) & (found >= 0)

    def recall(self, rows: np.ndarray, k: int) -> float:
        """Share of each row's exact k nearest that the index finds (1.0 for an exact index, or nothing to find)."""
        rows = np.asarray(rows, np.int64)
        if self.kind == "exact" or k == 0 or len(rows) == 0:
            return 1.0
        truth, found = self.search(rows, k, exact=True), self.search(rows, k)
        return float(np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(truth, found)]))
