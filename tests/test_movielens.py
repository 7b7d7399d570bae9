import pytest

from rgalign_rl.world import load_world

recbole = pytest.importorskip("recbole")


def test_movielens_world(tmp_path):
    from rgalign_rl.world.movielens import GENRES, convert_movielens

    w = load_world(convert_movielens(tmp_path / "ml"))
    assert len(w.intents) == 18 == len(GENRES)
    assert all(s["clicked"] for s in w.samples) and w.oracle is None and w.teachers is None
    assert set(w.samples[0]["features"]) >= {"age", "gender", "occupation", "last1_genres"}
    assert w.sizes()["test_samples"] > 1000
