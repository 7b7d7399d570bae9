import json
import subprocess
import sys

import numpy as np
import pytest

from rgalign_rl.world import WorldError, atomic_dir, load_world

INTENTS = [{"intent_id": "a", "text": "track my parcel"}, {"intent_id": "b", "text": "refund", "topic": "refunds"}]


def sample(i, **kw):
    row = {"sample_id": f"s{i}", "user_id": f"u{i % 3}", "timestamp": 100 + i, "features": {"x": i, "y": "v"},
           "clicked": ["a"] if i % 2 else []}
    row.update(kw)
    return row


def write_world(root, intents=INTENTS, samples=None, oracle=None, teachers=None, raw_samples=None):
    root.mkdir(parents=True, exist_ok=True)
    (root / "intents.jsonl").write_text("".join(json.dumps(r) + "\n" for r in intents))
    lines = raw_samples or [json.dumps(r) for r in (samples or [sample(i) for i in range(12)])]
    (root / "samples.jsonl").write_text("\n".join(lines) + "\n")
    if oracle is not None:
        (root / "oracle.jsonl").write_text("".join(json.dumps(r) + "\n" for r in oracle))
    if teachers is not None:
        (root / "teachers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in teachers))
    return root


def problems(root):
    with pytest.raises(WorldError) as e:
        load_world(root)
    return [str(p) for p in e.value.problems]


def test_valid_world_and_temporal_split(tmp_path):
    w = load_world(write_world(tmp_path / "w"))
    # timestamps 100..111: span 11, test >= 100 + 55/6 = 109.17, valid >= 107.33
    assert [s["split"] for s in w.samples] == ["train"] * 8 + ["valid"] * 2 + ["test"] * 2
    ids, mask = w.candidates
    assert ids.shape == (12, 2) and mask.all()  # no candidates = all intents
    assert w.dataset("test").num_rows == 2


def test_explicit_split_and_parquet(tmp_path):
    import pandas as pd

    root = write_world(tmp_path / "w", samples=[sample(i, split="test" if i < 2 else "train") for i in range(6)])
    rows = [json.loads(l) for l in (root / "samples.jsonl").read_text().splitlines()]
    (root / "samples.jsonl").unlink()
    pd.DataFrame(rows).to_parquet(root / "samples.parquet")
    w = load_world(root)
    assert [s["split"] for s in w.samples][:3] == ["test", "test", "train"]
    assert w.samples[1]["clicked"] == ["a"]


@pytest.mark.parametrize("kind,mutate,expected", [
    ("unknown intent id", lambda s: s[3].update(clicked=["zzz"]), "samples.jsonl:4: clicked: unknown intent id 'zzz'"),
    ("duplicate sample id", lambda s: s[5].update(sample_id="s1"), "samples.jsonl:6: sample_id: duplicate id 's1'"),
    ("missing field", lambda s: s[2].pop("user_id"), "samples.jsonl:3: user_id: missing required field"),
    ("wrong type", lambda s: s[0].update(timestamp="noon"), "samples.jsonl:1: timestamp: expected an integer"),
    ("NaN feature", lambda s: s[7]["features"].update(x=float("nan")), "samples.jsonl:8: features.x: non-finite"),
    ("click outside candidates", lambda s: s[1].update(candidates=["b"]), "samples.jsonl:2: clicked: intent 'a' is not"),
])
def test_sample_errors_name_file_line_field(tmp_path, kind, mutate, expected):
    rows = [sample(i) for i in range(12)]
    mutate(rows)
    found = problems(write_world(tmp_path / "w", samples=rows))
    assert any(p.startswith(expected) for p in found), (kind, found)


def test_intent_errors_and_empty_kb(tmp_path):
    found = problems(write_world(tmp_path / "dup", intents=INTENTS + [{"intent_id": "a", "text": "again"}]))
    assert any(p.startswith("intents.jsonl:3: intent_id: duplicate id 'a'") for p in found)
    found = problems(write_world(tmp_path / "empty", intents=[]))
    assert any("intents.jsonl:0: intent_id: the knowledge base is empty" in p for p in found)
    found = problems(write_world(tmp_path / "json", raw_samples=[json.dumps(sample(0)), "{not json"]))
    assert any(p.startswith("samples.jsonl:2: (json): invalid JSON") for p in found)


def test_oracle_and_teacher_errors(tmp_path):
    oracle = [{"sample_id": "s0", "probs": {"a": 1.5}}, {"sample_id": "s1", "probs": {"a": float("nan")}},
              {"sample_id": "nope", "probs": {"a": 0.1}}, {"sample_id": "s2", "probs": {"q": 0.1}}]
    teachers = [{"sample_id": "s0", "teacher": "t"}]
    found = problems(write_world(tmp_path / "w", oracle=oracle, teachers=teachers))
    assert "oracle.jsonl:1: probs.a: probability 1.5 is outside [0, 1]" in found
    assert "oracle.jsonl:2: probs.a: probability nan is outside [0, 1]" in found
    assert "oracle.jsonl:3: sample_id: unknown sample id 'nope'" in found
    assert "oracle.jsonl:4: probs.q: unknown intent id" in found
    assert "teachers.jsonl:1: query: missing required field" in found


def test_cli_validate_prints_at_most_20_errors(tmp_path):
    rows = [sample(i, clicked=["zzz"]) for i in range(30)]
    root = write_world(tmp_path / "w", samples=rows)
    r = subprocess.run([sys.executable, "-m", "rgalign_rl.cli", "world", "validate", str(root)],
                       capture_output=True, text=True)
    assert r.returncode != 0
    lines = [l for l in r.stderr.splitlines() if l.startswith("samples.jsonl:")]
    assert len(lines) == 20 and "... and 10 more errors" in r.stderr


def test_atomic_dir_leaves_nothing_behind_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "half.jsonl").write_text("x")
            raise RuntimeError("boom")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_columnar_rows_read_back_as_the_files_rows(tmp_path):
    """A world holds its rows as columns (world/columns.py); every row reads back as the file's, whatever
    mix of feature types, candidate lists and extra oracle fields it has."""
    rows = [sample(0, features={"x": 1, "y": "v", "z": True}),
            sample(1, features={"x": 2.5, "y": 3}, behavior=["open", "pay", "open"]),
            sample(2, features={"y": "w"}, candidates=["b", "a"], clicked=["a"]),
            sample(3, features={}, candidates=["a"], clicked=[]),
            sample(4, features={"x": -7, "z": False}, behavior=[])]
    oracle = [{"sample_id": "s2", "probs": {"a": 0.25, "b": 0.125}, "needs": ["refund it"], "need_intent": "b", "segment": "x"},
              {"sample_id": "s0", "probs": {"a": 1.0}, "note": {"k": [1, 2]}}]
    teachers = [{"sample_id": "s1", "teacher": "t1", "query": "refund"}, {"sample_id": "s1", "teacher": "t2", "query": "refund"},
                {"sample_id": "s4", "teacher": "t1", "query": "where is it"}]
    w = load_world(write_world(tmp_path / "w", samples=rows, oracle=oracle, teachers=teachers))
    for row, got in zip(rows, w.samples):
        assert got == {"behavior": [], "candidates": None, **row, "split": got["split"]}
        assert type(got["features"].get("x")) is type(row["features"].get("x"))  # 1 stays int, 2.5 float, True bool
    assert w.oracle["s2"] == oracle[0] and w.oracle["s0"] == {**oracle[1], "needs": []} and "s1" not in w.oracle
    assert list(w.teachers) == teachers
    ids, mask = w.candidates
    assert ids.tolist() == [[0, 1], [0, 1], [1, 0], [0, -1], [0, 1]]  # no list = all intents; padding -1
    assert w.labels.tolist() == [[0, 0], [1, 0], [0, 1], [0, 0], [0, 0]]
    assert w.oracle_probs().tolist() == [[1.0, 0.0], [0, 0], [0.125, 0.25], [0, 0], [0, 0]]
    assert w.has_needs and w.oracle.needs_of(2) == ["refund it"] and w.oracle.needs_of(1) == []


def test_feature_encoder_reads_columns_as_it_read_dicts(tmp_path):
    from rgalign_rl.ranker.features import FeatureEncoder

    rows = [sample(i, features={"n": i * 1.5, "c": ["red", "blue", 7][i % 3], "b": i % 2 == 0}, behavior=[f"e{i % 4}"] * (i % 11))
            for i in range(40)]
    w = load_world(write_world(tmp_path / "w", samples=rows))
    enc = FeatureEncoder.fit(w.samples, np.arange(30))
    assert enc.fields == ["b", "c", "n"] and len(enc.bins["n"]) == 7  # 30 distinct numbers: 8 quantile bins
    assert enc.vocab["c"] == {"int:7": 1, "str:blue": 2, "str:red": 3} and enc.vocab["b"] == {"bool:False": 1, "bool:True": 2}
    x, b = enc.transform(w.samples)
    assert np.array_equal((x, b)[0], FeatureEncoder.fit(rows[:30]).transform(rows)[0])  # rows as dicts: the same
    assert x[0].tolist() == [2, 3, 1]  # True, "red", the lowest bin
    assert b[10].tolist() == [enc.behavior_vocab["e2"]] * 8  # the last 8 of 10 events
    assert b[0].tolist() == [0] * 8 and x[39, 2] == len(enc.bins["n"]) + 1  # no events; above every edge
