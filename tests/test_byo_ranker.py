"""Bring your own ranker: ``ranker.class`` names a class written outside the package (examples/my_ranker.py),
which the loop trains as its production ranker, nests QE-Rec in, freezes for the reward and reloads from its
folder."""
import json
from pathlib import Path

import numpy as np
import pytest

from rgalign_rl.config import ConfigError, load_yaml

from conftest import CONFIG, THREADS, copy_run

EXAMPLES = str(Path(__file__).resolve().parents[1] / "examples")


@pytest.fixture
def examples(monkeypatch):
    monkeypatch.syspath_prepend(EXAMPLES)  # as PYTHONPATH=examples does for `rgalign run`


@pytest.mark.parametrize("overrides,message", [
    (["ranker.class=no_such_module:Ranker"], "config key ranker.class: 'no_such_module:Ranker': cannot import "
                                             "no_such_module (ModuleNotFoundError"),
    (["ranker.class=my_ranker:Nope"], "config key ranker.class: 'my_ranker:Nope': module my_ranker has no Nope"),
    (["ranker.class=my_ranker"], "config key ranker.class: 'my_ranker' is not package.module:Class"),
    (["ranker.class=collections:OrderedDict"], "config key ranker.class: 'collections:OrderedDict': not a "
                                               "torch.nn.Module class"),
    (["ranker.class=torch.nn:Linear"], "config key ranker.class: 'torch.nn:Linear': forward(self, input: "
                                       "torch.Tensor) -> torch.Tensor does not take (x, behavior, cand, query=None)"),
    (["ranker.class=my_ranker:MyRanker", "ranker.arch=qe_rec"], "config key ranker.arch: qe_rec mixes the query"),
    (["reward.scorer.ranker=/no/such/folder"], "config key reward.scorer.ranker: /no/such/folder: not a ranker folder"),
])
def test_a_bad_ranker_class_is_refused_at_config_load(examples, overrides, message):
    from rgalign_rl.align.loop_config import loop_config

    with pytest.raises(ConfigError) as e:
        loop_config(load_yaml(CONFIG, overrides))
    assert len(e.value.problems) == 1 and e.value.problems[0].startswith(message), e.value.problems


def test_the_class_key_reads_from_the_file_and_back_from_the_written_config(examples, tmp_path):
    from dataclasses import asdict

    from rgalign_rl.align.loop_config import LoopConfig, loop_config
    from rgalign_rl.config import from_dict

    cfg = tmp_path / "c.yaml"
    cfg.write_text(Path(CONFIG).read_text().replace("ranker:\n", "ranker:\n  class: my_ranker:MyRanker\n", 1))
    loaded = loop_config(load_yaml(cfg))
    assert loaded.ranker.class_ == "my_ranker:MyRanker"
    assert from_dict(LoopConfig, asdict(loaded)).ranker.class_ == "my_ranker:MyRanker"  # metrics.json's config
    assert loop_config(load_yaml(CONFIG)).ranker.class_ is None  # the default: the built-in two-tower


def test_own_ranker_trains_saves_reloads_and_nests(examples, tiny_world, tmp_path):
    """The production role (no query), its folder (class recorded, same scores reloaded), QE-Rec's query term
    on top (exactly the ranker's scores at the start), the class reading the query itself, and the reward."""
    import torch
    from my_ranker import MyRanker

    from rgalign_rl.align.loop_config import loop_config
    from rgalign_rl.ranker.model import QERecOnTop
    from rgalign_rl.ranker.protocol import Ranker
    from rgalign_rl.ranker.queries import query_embeddings
    from rgalign_rl.ranker.train import RankerData, TrainConfig, load_ranker, save_ranker, score, train_ranker
    from rgalign_rl.scoring import FrozenRankerScorer, ScorerConfig
    from rgalign_rl.world import load_world

    torch.set_num_threads(THREADS)
    world = load_world(tiny_world)
    rows = np.arange(len(world.samples))
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.01)
    own, enc, hist = train_ranker(world, "two_tower", None, cfg, log=lambda *a: None, ranker_class=MyRanker)
    assert type(own) is MyRanker and isinstance(own, Ranker) and own.cfg.query_dim == 0
    assert max(h["valid_gauc"] for h in hist) > 0.6
    save_ranker(tmp_path / "own", own, enc, {"queries": "none", "query_mode": "text", "history": hist})
    meta = json.loads((tmp_path / "own" / "config.json").read_text())
    assert meta["class"] == "my_ranker:MyRanker" and "query_on_top" not in meta
    again, enc2, _ = load_ranker(tmp_path / "own")
    assert type(again) is MyRanker
    np.testing.assert_array_equal(score(own, RankerData(world, enc), rows), score(again, RankerData(world, enc2), rows))

    q = query_embeddings(world, "teacher:atlas", "text")
    start, _, _ = train_ranker(world, "qe_rec_gated", q, TrainConfig(epochs=0), nest=again, encoder=enc2,
                               query_text=q.shape[1], log=lambda *a: None)
    assert isinstance(start, QERecOnTop) and isinstance(start.base, MyRanker)
    np.testing.assert_allclose(score(start, RankerData(world, enc2, q), rows), score(again, RankerData(world, enc2), rows),
                               atol=1e-5)  # nested: the query term starts at exactly zero
    qe, _, qhist = train_ranker(world, "qe_rec_gated", q, cfg, nest=again, encoder=enc2, query_text=q.shape[1],
                                log=lambda *a: None)
    assert all(not p.requires_grad for p in qe.base.parameters())  # the ranker underneath stays frozen
    torch.testing.assert_close(qe.base.weight.weight, again.weight.weight)
    save_ranker(tmp_path / "qe", qe, enc2, {"queries": "teacher:atlas", "query_mode": "text", "history": qhist})
    qe2, _, meta = load_ranker(tmp_path / "qe")
    assert meta["class"] == "my_ranker:MyRanker" and meta["query_on_top"] is True
    np.testing.assert_array_equal(score(qe, RankerData(world, enc2, q), rows), score(qe2, RankerData(world, enc2, q), rows))

    reads, _, _ = train_ranker(world, "qe_rec_gated", q, TrainConfig(epochs=1), ranker_class=MyRanker,
                               query_text=q.shape[1], log=lambda *a: None)  # ranker.nest: false
    assert type(reads) is MyRanker and reads.cfg.query_dim == q.shape[1]

    # the reward freezes any such folder (reward.scorer.ranker), the neighbour space without a user_embedding
    assert loop_config(load_yaml(CONFIG, [f"reward.scorer.ranker={tmp_path / 'qe'}"])).reward.scorer.ranker
    for folder in ("own", "qe"):
        scorer = FrozenRankerScorer(world, None, ScorerConfig(neighbours=5, ranker=str(tmp_path / folder)))
        p = scorer.distribution(rows[:8], [""] * 8, ["where is my parcel"] * 8)
        assert p.shape == (8, world.candidates[0].shape[1]) and torch.allclose(p.sum(-1), torch.ones(8))
        assert scorer.target(rows[:8]).shape == p.shape


@pytest.mark.slow(seconds=25)
def test_the_tiny_loop_runs_every_stage_with_an_own_ranker_class(examples, tiny_world, one_process_run, tmp_path):
    from rgalign_rl.run import run

    # the warm reasoner does not depend on the ranker: taken from the shared run; every ranker stage runs here
    out = copy_run(one_process_run[0], tmp_path / "byo", keep=("reasoner_warm",))
    metrics = run(CONFIG, str(tiny_world), str(out), overrides=["ranker.class=my_ranker:MyRanker"], resume=True,
                  log=lambda *a: None)
    stages = {s["name"]: s for s in metrics["stages"]}
    assert {"two_tower", "qe_rec", "control", "final"} <= set(stages)
    for folder, on_top in (("two_tower", False), ("qe_rec", True), ("round1/ranker", True), ("control/round1", True)):
        meta = json.loads((out / folder / "config.json").read_text())
        assert meta["class"] == "my_ranker:MyRanker" and meta.get("query_on_top", False) is on_top, folder
    assert json.loads((out / "metrics.json").read_text())["config"]["ranker"]["class_"] == "my_ranker:MyRanker"
    assert all(np.isfinite(stages[s]["gauc"]) for s in ("two_tower", "qe_rec", "control", "final"))
