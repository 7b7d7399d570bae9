"""Worlds at the paper's scale: ShopSim's block-drawn paper size, samples in Parquet shards, read as columns."""
import json

import numpy as np
import pytest

import rgalign_rl.world.arrow_samples as arrow_samples
from rgalign_rl.world import WorldError, load_world
from rgalign_rl.world.shopsim.simulator import ShopSimConfig, write_shopsim

from test_world import INTENTS, sample


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    """A paper-sized world's design on 600 users, in shards of 1,000 requests."""
    return write_shopsim(tmp_path_factory.mktemp("paper") / "w", ShopSimConfig(seed=3, size="paper", users=600, shard_rows=1000))


def test_paper_world_is_sharded_with_90_features_and_the_story_holds(paper, tmp_path):
    shards = sorted(p.name for p in paper.glob("samples-*.parquet"))
    assert len(shards) >= 3 and not (paper / "samples.jsonl").exists()
    w = load_world(paper)
    assert w.sizes()["features"] >= 89
    meta = json.loads((paper / "world.json").read_text())
    assert len(meta["features"]) == len(w.samples.features) >= 89
    assert w.candidates[1].sum(1).min() == 20
    # the story's statistics are the request-by-request engine's (same design, 2,000 users each)
    blocks = story(load_world(write_shopsim(tmp_path / "b", ShopSimConfig(seed=3, size="paper", users=2000))))
    rows = story(load_world(write_shopsim(tmp_path / "r", ShopSimConfig(seed=3, size="tiny", users=2000))))
    for name, tol in [("need offered", 0.01), ("need clicked", 0.02), ("clicks", 0.05), ("actions", 0.05),
                      ("atlas", 0.001), ("sage", 0.02), ("echo", 0.02), ("atlas names the need", 0.02),
                      ("need is top", 0.02)]:
        assert abs(blocks[name] - rows[name]) < tol, (name, blocks[name], rows[name])
    # the same seed gives the same files
    again = write_shopsim(tmp_path / "again", ShopSimConfig(seed=3, size="paper", users=600, shard_rows=1000))
    for f in sorted(p.name for p in paper.iterdir()):
        assert (paper / f).read_bytes() == (again / f).read_bytes(), f


def story(w) -> dict:
    ids, _ = w.candidates
    need = np.array([w.samples.intent_code[n] for n in w.oracle.field_of_samples("need_intent")])
    at_need = ids == need[:, None]
    out = {"need offered": at_need.any(1).mean(), "need clicked": w.labels[at_need].mean(),
           "clicks": w.samples.clicked.lengths.mean(), "actions": w.samples.behavior.lengths.mean()}
    texts = {it["intent_id"]: it["text"] for it in w.intents}
    rows = list(w.teachers)
    for t in ("atlas", "sage", "echo"):
        out[t] = sum(r["teacher"] == t for r in rows) / len(w.samples)
    phrase = {w.samples[i]["sample_id"]: w.oracle.needs_of(i)[0] for i in range(len(w.samples))}
    atlas = [r for r in rows if r["teacher"] == "atlas"]
    out["atlas names the need"] = np.mean([r["query"].endswith(phrase[r["sample_id"]]) for r in atlas])
    probs = [w.oracle[w.samples[i]["sample_id"]]["probs"] for i in range(len(w.samples))]
    out["need is top"] = np.mean([max(p, key=p.get) == w.intents[k]["intent_id"] for p, k in zip(probs, need)])
    assert texts
    return out


def test_columns_read_the_same_table_as_rows(paper, monkeypatch):
    bulk = load_world(paper).samples
    monkeypatch.setattr(arrow_samples, "append_batch", lambda *a: (False, 0))
    rows = load_world(paper).samples
    assert len(bulk) == len(rows) > 2000
    for i in range(0, len(bulk), 7):
        assert bulk[i] == rows[i]
    everything = np.arange(len(bulk))
    for name, col in bulk.features.items():
        assert (col.keys(everything) == rows.features[name].keys(everything)).all(), name
    assert bulk.features["orders_30d"].num.dtype == np.int8 and bulk.features["coins_earned_30d"].num.dtype == np.int16
    assert bulk.features["order_value"].num.dtype == np.float64
    assert bulk.features["city_id"].num.strides == (0,) and bulk.features["city_id"].code.dtype == np.int16
    assert bulk.features["orders_30d"].kind.strides == (0,)  # every row an int: the type is kept once


def write_shards(root, rows, per_shard=6):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir(parents=True)
    (root / "intents.jsonl").write_text("".join(json.dumps(r) + "\n" for r in INTENTS))
    names = sorted({k for r in rows for k in r})
    rows = [{k: r.get(k) for k in names} for r in rows]  # every shard with every column (null where a row has none)
    for s in range(0, len(rows), per_shard):
        pq.write_table(pa.Table.from_pylist(rows[s : s + per_shard]), root / f"samples-{s // per_shard:05d}.parquet")
    return root


@pytest.mark.parametrize("mutate,expected", [
    (lambda s: s[8].update(clicked=["zzz"]), "samples-00001.parquet:3: clicked: unknown intent id 'zzz'"),
    (lambda s: s[9].update(sample_id="s1"), "samples-00001.parquet:4: sample_id: duplicate id 's1' (first on samples-00000.parquet line 2)"),
    (lambda s: s[3].update(sample_id="s10"), "samples-00001.parquet:5: sample_id: duplicate id 's10' (first on samples-00000.parquet line 4)"),
    (lambda s: s[7].update(candidates=["b"]), "samples-00001.parquet:2: clicked: intent 'a' is not among the candidates"),
    (lambda s: s[2].update(user_id=""), "samples-00000.parquet:3: user_id: must not be empty"),
])
def test_shard_errors_name_the_shard_line_and_field(tmp_path, mutate, expected):
    rows = [sample(i) for i in range(12)]
    mutate(rows)
    with pytest.raises(WorldError) as e:
        load_world(write_shards(tmp_path / "w", rows))
    found = [str(p) for p in e.value.problems]
    assert any(p.startswith(expected) for p in found), found


def test_valid_shards_load_as_one_table(tmp_path):
    rows = [sample(i, candidates=["a", "b"], behavior=["x", "y"][: i % 3]) for i in range(12)]
    w = load_world(write_shards(tmp_path / "w", rows, per_shard=5))
    assert [w.samples[i] for i in range(12)] == [{**r, "split": w.samples[i]["split"]} for i, r in enumerate(rows)]
    assert w.samples.features["x"].num.dtype == np.int8 and w.samples.features["y"].code.tolist() == [0] * 12


def test_oracle_probs_of_any_rows_are_the_oracle_rows(paper):
    w = load_world(paper)
    idx = np.array([5, 0, 17, len(w.samples) - 1])
    got, ids = w.oracle_probs(idx), w.candidates[0]
    for r, i in enumerate(idx):
        p = w.oracle[w.samples[i]["sample_id"]]["probs"]
        assert got[r].tolist() == [p[w.intents[c]["intent_id"]] for c in ids[i]]
    assert (w.oracle_probs()[idx] == got).all()


def test_columns_and_rows_agree_on_awkward_batches(tmp_path, monkeypatch):
    """Nulls in every place the format allows them, dictionary columns, a feature no row gives, a split column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for i in range(40):
        feats = {"n": None if i % 7 == 0 else i - 20, "f": None if i % 5 == 0 else i / 4, "b": None if i % 3 == 0 else i % 2 == 0,
                 "s": None if i % 4 == 0 else ["z", "y", ""][i % 3], "never": None}
        rows.append({"sample_id": f"s{i}", "user_id": f"u{i % 6}", "timestamp": 100 + i, "features": feats,
                     "behavior": None if i % 6 == 0 else ["q", "p", "q"][: i % 4], "candidates": None if i % 2 else ["a", "b"],
                     "clicked": ["b"] if i % 3 == 0 else [], "split": ["train", "valid", "test"][i % 3]})
    root = write_shards(tmp_path / "w", rows, per_shard=40)
    (root / "samples-00000.parquet").unlink()
    table = pa.Table.from_pylist(rows)
    s = table.column("features").combine_chunks()
    fields = [s.field(i) if s.type[i].name != "s" else s.field(i).dictionary_encode() for i in range(s.type.num_fields)]
    table = table.set_column(3, "features", pa.StructArray.from_arrays(fields, [f.name for f in s.type]))
    pq.write_table(table, root / "samples-00000.parquet")
    real, took = arrow_samples.append_batch, []
    monkeypatch.setattr(arrow_samples, "append_batch", lambda *a: took.append(real(*a)) or took[-1])
    bulk = load_world(root).samples
    assert took == [(True, 40)]  # read as columns
    monkeypatch.setattr(arrow_samples, "append_batch", lambda *a: (False, 0))
    rows_path = load_world(root).samples
    assert [bulk[i] for i in range(40)] == [rows_path[i] for i in range(40)]
    assert set(bulk.features) == set(rows_path.features) == {"n", "f", "b", "s"}
    assert bulk.features["s"].vocab.values == rows_path.features["s"].vocab.values
    assert bulk.behavior_vocab.values == rows_path.behavior_vocab.values
    everything = np.arange(40)
    for name in bulk.features:
        assert (bulk.features[name].keys(everything) == rows_path.features[name].keys(everything)).all(), name
