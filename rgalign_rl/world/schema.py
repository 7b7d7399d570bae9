"""The world format (DESIGN.md section 2): reading and validating a world directory.

Every row is checked before anything downstream sees it. Errors are collected, not raised one at a
time, so a user fixing a world sees all of them at once as ``FILE:LINE: field: what is wrong``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .columns import OracleTable, SampleTable, TeacherTable

SPLITS = ("train", "valid", "test")
MAX_SHOWN_ERRORS = 20


@dataclass
class Problem:
    file: str
    line: int  # 1-based; 0 for a problem with the whole file
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


class WorldError(ValueError):
    """A world that fails validation. ``problems`` holds every error found."""

    def __init__(self, root: str | Path, problems: list[Problem]):
        self.root = str(root)
        self.problems = problems
        shown = "\n".join(str(p) for p in problems[:MAX_SHOWN_ERRORS])
        more = len(problems) - MAX_SHOWN_ERRORS
        tail = f"\n... and {more} more errors" if more > 0 else ""
        super().__init__(f"invalid world {self.root} ({len(problems)} errors):\n{shown}{tail}")


@dataclass
class Checker:
    """Collects problems for one file; the helpers return the value when it is valid, else None."""

    file: str
    problems: list[Problem] = field(default_factory=list)

    def add(self, line: int, name: str, message: str) -> None:
        self.problems.append(Problem(self.file, line, name, message))

    def string(self, row: dict, line: int, name: str, required: bool = True) -> str | None:
        if name not in row:
            if required:
                self.add(line, name, "missing required field")
            return None
        value = row[name]
        if not isinstance(value, str):
            self.add(line, name, f"expected a string, got {type(value).__name__}")
            return None
        if required and not value.strip():
            self.add(line, name, "must not be empty")
            return None
        return value

    def integer(self, row: dict, line: int, name: str) -> int | None:
        if name not in row:
            self.add(line, name, "missing required field")
            return None
        value = row[name]
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(line, name, f"expected an integer, got {type(value).__name__}")
            return None
        return value

    def string_list(self, row: dict, line: int, name: str, required: bool) -> list[str] | None:
        if name not in row or row[name] is None:
            if required:
                self.add(line, name, "missing required field")
            return None
        value = row[name]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.add(line, name, "expected a list of strings")
            return None
        return value


def read_rows(path: Path, batches: bool = False) -> Iterator[tuple[int, Any]]:
    """Yields (line number, parsed row) for a JSONL or Parquet file; a JSON error yields an Exception.
    ``batches``: a Parquet file yields (first line, pyarrow RecordBatch) instead, to be read as columns."""
    if path.suffix == ".parquet":  # read in row batches: a million rows never sit in memory as dicts
        import pyarrow.parquet as pq

        line = 0
        try:  # by row group: a batch across two of them fails on nested columns in pyarrow
            pf = pq.ParquetFile(path)
            groups = (pf.iter_batches(batch_size=65536 if batches else 8192, row_groups=[g])
                      for g in range(pf.num_row_groups))
            for batch in (b for group in groups for b in group):
                if batches:
                    yield line + 1, batch
                    line += batch.num_rows
                    continue
                for row in batch.to_pylist():
                    line += 1
                    yield line, {k: _from_arrow(v) for k, v in row.items()}
        except Exception as e:  # not Parquet at all, or truncated: one problem for the whole file
            yield 0, ValueError(f"unreadable Parquet file: {type(e).__name__}: {e}")
        return
    with open(path, "rb") as f:
        for i, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield i, ValueError(f"invalid UTF-8 (byte {e.start} of the line)")
                continue
            if not text.strip():
                continue
            try:  # NaN / Infinity parse, and the field checks name them (features.x: non-finite number nan)
                yield i, json.loads(text)
            except json.JSONDecodeError as e:
                yield i, e


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows (NaN and infinities are refused)")


def _from_arrow(value: Any) -> Any:
    """Parquet gives None for missing values (and structs with every field); turn rows back into JSON-like values."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return [_from_arrow(v) for v in value.tolist()]
    if isinstance(value, dict):
        return {k: _from_arrow(v) for k, v in value.items() if v is not None}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def check_intents(path: Path) -> tuple[list[dict], list[Problem]]:
    chk = Checker(path.name)
    intents: list[dict] = []
    seen: dict[str, int] = {}
    for line, row in read_rows(path):
        if not _is_object(chk, line, row):
            continue
        iid = chk.string(row, line, "intent_id")
        text = chk.string(row, line, "text")
        topic = chk.string(row, line, "topic", required=False)
        if iid is not None and iid in seen:
            chk.add(line, "intent_id", f"duplicate id {iid!r} (first on line {seen[iid]})")
            continue
        if iid is not None and text is not None:
            seen[iid] = line
            intents.append({"intent_id": iid, "text": text, "topic": topic or ""})
    if not intents and not chk.problems:
        chk.add(0, "intent_id", "the knowledge base is empty")
    return intents, chk.problems


def check_samples(paths: Path | list[Path], intent_ids: list[str]) -> tuple[SampleTable, list[Problem]]:
    """One samples file, or the shards of one (``samples-*.parquet``, read in name order as one table). A Parquet
    batch is read as columns (world/arrow_samples.py) unless it holds something only the row path reports."""
    from .arrow_samples import append_batch

    files = [paths] if isinstance(paths, Path) else list(paths)
    samples, problems = SampleTable(intent_ids), []
    seen: dict[str, tuple[str, int]] = {}  # rows read one at a time: id -> (file, line)
    places: list[tuple[int, int, str, int]] = []  # batches read as columns: (first row, end, file, first line)
    with_split = 0
    for path in files:
        chk = Checker(path.name)
        for line, item in read_rows(path, batches=True):
            if hasattr(item, "num_rows"):
                start = samples.n_appended
                ok, n_split = append_batch(samples, item)
                if ok:
                    places.append((start, start + item.num_rows, path.name, line))
                    with_split += n_split
                    continue
                rows = ((line + j, {k: _from_arrow(v) for k, v in row.items()}) for j, row in enumerate(item.to_pylist()))
            else:
                rows = [(line, item)]
            for ln, row in rows:
                with_split += _check_sample_row(chk, samples, seen, ln, row)
        problems += chk.problems
    if any(p.suffix == ".parquet" for p in files):  # pyarrow's pool keeps what it freed (~250 MB a million rows)
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    n = samples.n_appended
    samples = samples.finish()
    problems += _duplicate_ids(samples, seen, places)
    if not n and not problems:
        problems.append(Problem(files[0].name, 0, "sample_id", "no samples"))
    if 0 < with_split < n:
        problems.append(Problem(files[0].name, 0, "split", f"given on {with_split} of {n} rows: give it on all rows or none"))
    return samples, problems


def _check_sample_row(chk: Checker, samples: SampleTable, seen: dict, line: int, row) -> int:
    """Checks one row and appends it if it has no problem; returns 1 if it gives a split."""
    with_split = 0
    if not _is_object(chk, line, row):
        return 0
    n_before = len(chk.problems)
    sid = chk.string(row, line, "sample_id")
    uid = chk.string(row, line, "user_id")
    ts = chk.integer(row, line, "timestamp")
    feats = row.get("features")
    if not isinstance(feats, dict):
        chk.add(line, "features", "missing required field" if feats is None else "expected an object")
    else:
        for name, value in feats.items():
            if isinstance(value, float) and not math.isfinite(value):
                chk.add(line, f"features.{name}", f"non-finite number {value}")
            elif not isinstance(value, (str, int, float, bool)):
                chk.add(line, f"features.{name}", f"expected str, int, float or bool, got {type(value).__name__}")
    chk.string_list(row, line, "behavior", required=False)
    cands = chk.string_list(row, line, "candidates", required=False)
    clicked = chk.string_list(row, line, "clicked", required=True)
    for name, ids in (("candidates", cands), ("clicked", clicked)):
        for iid in ids or []:
            if iid not in samples.intent_code:
                chk.add(line, name, f"unknown intent id {iid!r}")
    if cands is not None:
        if not cands:
            chk.add(line, "candidates", "must not be empty (omit it to mean all intents)")
        if len(set(cands)) != len(cands):
            chk.add(line, "candidates", "duplicate intent ids")
        for iid in set(clicked or []) - set(cands):
            chk.add(line, "clicked", f"intent {iid!r} is not among the candidates")
    split = row.get("split")
    if split is not None:
        with_split += 1
        if split not in SPLITS:
            chk.add(line, "split", f"expected one of {', '.join(SPLITS)}, got {split!r}")
    if sid is not None and sid in seen:
        chk.add(line, "sample_id", f"duplicate id {sid!r} (first on {_place(chk.file, *seen[sid])})")
    elif sid is not None:
        seen[sid] = (chk.file, line)
    if len(chk.problems) == n_before:
        samples.append(sid, uid, ts, feats, row.get("behavior"), cands, clicked, split)
    return with_split


def _place(here: str, file: str, line: int) -> str:
    return f"line {line}" if file == here else f"{file} line {line}"


def _duplicate_ids(samples: SampleTable, seen: dict, places: list) -> list[Problem]:
    """Ids that repeat across rows read as columns (the row path finds its own as it reads)."""
    if not places:
        return []
    ids = samples.sample_id
    order = np.argsort(ids, kind="stable")
    same = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if not len(same):
        return []
    starts = np.array([p[0] for p in places])

    def where(pos: int) -> tuple[str, int] | None:  # None: a row read one at a time
        b = np.searchsorted(starts, pos, side="right") - 1
        if b >= 0 and pos < places[b][1]:
            return places[b][2], places[b][3] + pos - places[b][0]
        return None

    out = []
    run_start = np.flatnonzero(np.concatenate([[True], ids[order][1:] != ids[order][:-1]]))
    first_of = order[run_start[np.searchsorted(run_start, same + 1, side="right") - 1]]  # each id's first row
    for j, f in sorted(zip(order[same + 1].tolist(), first_of.tolist())):  # in row order
        first, again = where(f), where(j)
        if first is None and again is None:  # the row path has reported it
            continue
        sid = str(ids[j])
        first, again = first or seen.get(sid, ("?", 0)), again or seen.get(sid, ("?", 0))
        out.append(Problem(again[0], again[1], "sample_id", f"duplicate id {sid!r} (first on {_place(again[0], *first)})"))
    return out


def check_oracle(path: Path, samples: SampleTable) -> tuple[OracleTable, list[Problem]]:
    chk = Checker(path.name)
    oracle = OracleTable(samples)
    intent_ids = samples.intent_code
    for line, row in read_rows(path):
        if not _is_object(chk, line, row):
            continue
        sid = chk.string(row, line, "sample_id")
        pos = None if sid is None else samples.position(sid)
        if sid is not None and pos is None:
            chk.add(line, "sample_id", f"unknown sample id {sid!r}")
        elif pos is not None and oracle.row[pos] >= 0:
            chk.add(line, "sample_id", f"duplicate oracle row for {sid!r}")
        probs = row.get("probs")
        if not isinstance(probs, dict):
            chk.add(line, "probs", "missing required field" if probs is None else "expected an object")
            continue
        ok = True
        for iid, p in probs.items():
            if iid not in intent_ids:
                chk.add(line, f"probs.{iid}", "unknown intent id")
                ok = False
            elif isinstance(p, bool) or not isinstance(p, (int, float)):
                chk.add(line, f"probs.{iid}", f"expected a number, got {type(p).__name__}")
                ok = False
            elif not math.isfinite(p) or not 0.0 <= p <= 1.0:
                chk.add(line, f"probs.{iid}", f"probability {p} is outside [0, 1]")
                ok = False
        needs = chk.string_list(row, line, "needs", required=False)
        if ok and pos is not None and oracle.row[pos] < 0:
            oracle.append(pos, probs, needs or [], {k: v for k, v in row.items() if k not in ("sample_id", "probs", "needs")})
    return oracle.finish(), chk.problems


def check_teachers(path: Path, samples: SampleTable) -> tuple[TeacherTable, list[Problem]]:
    chk = Checker(path.name)
    rows = TeacherTable(samples)
    for line, row in read_rows(path):
        if not _is_object(chk, line, row):
            continue
        sid = chk.string(row, line, "sample_id")
        teacher = chk.string(row, line, "teacher")
        query = chk.string(row, line, "query", required=False)
        if "query" not in row:
            chk.add(line, "query", "missing required field")
        pos = None if sid is None else samples.position(sid)
        if sid is not None and pos is None:
            chk.add(line, "sample_id", f"unknown sample id {sid!r}")
        elif pos is not None and teacher is not None and query is not None:
            rows.append(pos, teacher, query)
    return rows.finish(), chk.problems


def check_meta(path: Path) -> tuple[dict, list[Problem]]:
    chk = Checker(path.name)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        chk.add(e.lineno, "(json)", f"invalid JSON: {e.msg}")
        return {}, chk.problems
    except ValueError as e:  # invalid UTF-8 (UnicodeDecodeError is a ValueError), NaN / Infinity
        chk.add(1, "(file)", str(e))
        return {}, chk.problems
    if not isinstance(meta, dict):
        chk.add(1, "(file)", "expected a JSON object")
        return {}, chk.problems
    for name in ("name", "description"):
        if name in meta and not isinstance(meta[name], str):
            chk.add(1, name, "expected a string")
    feats = meta.get("features", {})
    if not isinstance(feats, dict) or not all(isinstance(v, str) for v in feats.values()):
        chk.add(1, "features", "expected an object of feature name -> description")
    return meta, chk.problems


def _is_object(chk: Checker, line: int, row: Any) -> bool:
    if isinstance(row, json.JSONDecodeError):
        chk.add(line, "(json)", f"invalid JSON at column {row.colno}: {row.msg}")
        return False
    if isinstance(row, Exception):  # invalid UTF-8, an unreadable Parquet file (line 0)
        chk.add(line, "(file)" if line == 0 else "(line)", str(row))
        return False
    if not isinstance(row, dict):
        chk.add(line, "(row)", f"expected a JSON object, got {type(row).__name__}")
        return False
    return True
