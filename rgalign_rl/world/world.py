"""A loaded, validated world and the arrays every model and metric works on."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from .columns import OracleTable, SampleTable, TeacherTable
from .schema import (SPLITS, Problem, WorldError, check_intents, check_meta, check_oracle,
                     check_samples, check_teachers)


@dataclass
class World:
    """A validated world. ``samples``, ``oracle`` and ``teachers`` are columnar tables (world/columns.py) that
    read like the format's rows (``samples[i]`` a dict, ``oracle[sample_id]``, ``for t in teachers``); the
    arrays below are built from their columns."""

    root: Path
    meta: dict
    intents: list[dict]
    samples: SampleTable
    oracle: OracleTable | None = None
    teachers: TeacherTable | None = None
    intent_index: dict[str, int] = field(init=False)
    # arrays other modules derive from the samples, kept for the loaded world's lifetime (the ranker's
    # feature fields per encoder: a loop builds them ~10 times, seconds each on a default world)
    derived: dict = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.intent_index = {it["intent_id"]: i for i, it in enumerate(self.intents)}
        if (self.samples.split == "").any():
            self.samples.split = temporal_split(self.samples.timestamp)

    @property
    def name(self) -> str:
        return self.meta.get("name") or self.root.name

    @property
    def feature_descriptions(self) -> dict[str, str]:
        return self.meta.get("features", {})

    @property
    def split(self) -> np.ndarray:
        return self.samples.split

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    @cached_property
    def user_codes(self) -> np.ndarray:
        _, codes = np.unique(self.samples.user_id, return_inverse=True)
        return codes

    @cached_property
    def candidates(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids [n, C] with -1 padding, mask [n, C]) over all samples; C = the longest list (all intents for
        a sample without a candidate list)."""
        c, K = self.samples.candidates, len(self.intents)
        width = max(int(c.lengths.max(initial=0)), K if c.missing.any() else 0)
        ids = c.padded(width, dtype=np.int32)  # 0.6 GB at the paper's 7.5M x 20, not 1.2
        if c.missing.any():
            ids[c.missing] = np.pad(np.arange(K), (0, width - K), constant_values=-1)
        return ids, ids >= 0

    @cached_property
    def labels(self) -> np.ndarray:
        """[n, C] 1.0 where the candidate was clicked."""
        ids, _ = self.candidates
        clicked = self.samples.clicked
        n, K = len(ids), len(self.intents)
        hit = np.zeros((n, K + 1), bool)  # column K: padding
        hit[np.repeat(np.arange(n), clicked.lengths), clicked.codes] = True
        return np.take_along_axis(hit, np.where(ids >= 0, ids, K), axis=1).astype(np.float32)

    @cached_property
    def train_clicks(self) -> np.ndarray:
        """[K] clicks on each intent over the training split."""
        ids, train = self.candidates[0], self.indices("train")
        return np.bincount(ids[train][self.labels[train] > 0], minlength=len(self.intents))

    @property
    def has_needs(self) -> bool:
        """Whether the oracle names each request's true need (need accuracy and the headroom need it)."""
        return self.oracle is not None and len(self.oracle.needs.codes) > 0

    def oracle_probs(self, idx=None) -> np.ndarray | None:
        """[len(idx), C] the true click probability of each candidate of samples ``idx`` (default: all; 0 where
        the oracle is silent). Each sample's oracle entries are read through its row's offsets: linear in the
        rows asked for, whatever the world's size."""
        if self.oracle is None:
            return None
        ids, _ = self.candidates
        idx = np.arange(len(ids)) if idx is None else np.asarray(idx)
        o, K = self.oracle, len(self.intents)
        off, codes = o.probs_intent.offsets, o.probs_intent.codes
        out = np.zeros((len(idx), ids.shape[1]), np.float64)
        for a in range(0, len(idx), 65536):  # a dense [block, K] table at a time: not [n, K] at once
            p = idx[a : a + 65536]
            r = o.row[p]
            has = np.flatnonzero(r >= 0)
            lo, n = off[r[has]], off[r[has] + 1] - off[r[has]]
            entry = np.repeat(lo - np.concatenate([[0], np.cumsum(n)[:-1]]), n) + np.arange(n.sum())
            dense = np.zeros((len(p), K + 1), np.float64)  # column K: padding
            dense[np.repeat(has, n), codes[entry]] = o.probs[entry]
            out[a : a + len(p)] = np.take_along_axis(dense, np.where(ids[p] >= 0, ids[p], K), axis=1)
        return out

    def dataset(self, split: str | None = None):
        """The samples (of one split) as a ``datasets.Dataset``; features as a JSON string column
        because a world's feature names and types are its own."""
        import datasets

        rows = range(len(self.samples)) if split is None else self.indices(split)
        return datasets.Dataset.from_list([{**s, "features": json.dumps(s["features"], sort_keys=True),
                                            "candidates": s["candidates"] or []} for s in map(self.samples.__getitem__, rows)])

    def sizes(self) -> dict:
        clicked = self.samples.clicked.lengths > 0
        out = {"intents": len(self.intents), "topics": len({i["topic"] for i in self.intents}),
               "samples": len(self.samples), "users": int(self.user_codes.max()) + 1,
               "features": len(self.samples.features), "teacher_rows": len(self.teachers or [])}
        for split in SPLITS:
            m = self.split == split
            out[f"{split}_samples"] = int(m.sum())
            out[f"{split}_clicked_samples"] = int((m & clicked).sum())
        return out


def temporal_split(timestamps: np.ndarray) -> np.ndarray:
    """The last sixth of the time range is test, the sixth before it valid (DESIGN.md section 2)."""
    ts = timestamps.astype(np.float64)
    lo, span = ts.min(), ts.max() - ts.min()
    return np.where(ts >= lo + span * 5 / 6, "test", np.where(ts >= lo + span * 4 / 6, "valid", "train")).astype("<U5")


def find_samples_file(root: Path) -> Path | list[Path] | None:
    """samples.jsonl, samples.parquet, or the shards samples-*.parquet (in name order)."""
    for name in ("samples.jsonl", "samples.parquet"):
        if (root / name).exists():
            return root / name
    return sorted(root.glob("samples-*.parquet")) or None


def load_world(root: str | Path) -> World:
    """Reads and validates a world directory; raises WorldError listing every problem."""
    root = Path(root)
    if not root.is_dir():
        raise WorldError(root, [Problem(str(root), 0, "(dir)", "no such world directory")])
    problems: list[Problem] = []
    if not (root / "intents.jsonl").exists():
        problems.append(Problem("intents.jsonl", 0, "(file)", "missing"))
        intents = []
    else:
        intents, p = check_intents(root / "intents.jsonl")
        problems += p
    intent_ids = [i["intent_id"] for i in intents]
    samples_path = find_samples_file(root)
    samples = SampleTable(intent_ids).finish()
    if samples_path is None:
        problems.append(Problem("samples.jsonl", 0, "(file)", "missing (samples.jsonl, samples.parquet or samples-*.parquet shards)"))
    else:
        samples, p = check_samples(samples_path, intent_ids)
        problems += p
    oracle = teachers = None
    meta: dict = {}
    if (root / "oracle.jsonl").exists():
        oracle, p = check_oracle(root / "oracle.jsonl", samples)
        problems += p
    if (root / "teachers.jsonl").exists():
        teachers, p = check_teachers(root / "teachers.jsonl", samples)
        problems += p
    if (root / "world.json").exists():
        meta, p = check_meta(root / "world.json")
        problems += p
    if problems:
        raise WorldError(root, problems)
    return World(root, meta, intents, samples, oracle, teachers)


@contextmanager
def atomic_dir(out: str | Path):
    """Yields a temporary sibling directory that replaces ``out`` only if the block succeeds, so a
    failed or interrupted writer never leaves a half-written directory behind."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def json_line(row) -> str:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n"


def write_jsonl(path: Path, rows) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json_line(row))


def subset_world(src: str | Path, out: str | Path, requests: int, seed: int = 0) -> Path:
    """A world of ``requests`` requests drawn from ``src`` (seeded, each split in its share, at least two per
    split), with their teacher and oracle rows and every intent: a recipe tried on a slice of the logs first."""
    world = load_world(src)
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for split in ("train", "valid", "test"):
        idx = world.indices(split)
        n = min(len(idx), max(2, round(requests * len(idx) / len(world.samples))))
        keep += rng.choice(idx, n, replace=False).tolist()
    samples = [world.samples[i] for i in sorted(keep)]
    ids = {s["sample_id"] for s in samples}
    with atomic_dir(out) as tmp:
        write_jsonl(tmp / "intents.jsonl", world.intents)
        write_jsonl(tmp / "samples.jsonl", samples)
        if world.teachers is not None:
            write_jsonl(tmp / "teachers.jsonl", [t for t in world.teachers if t["sample_id"] in ids])
        if world.oracle is not None:
            write_jsonl(tmp / "oracle.jsonl", [world.oracle[s] for s in sorted(ids)])
        meta = {**world.meta, "subset_of": str(world.root), "subset_seed": seed}
        (tmp / "world.json").write_text(json.dumps(meta, indent=1))
    return Path(out)
