"""The reward's nearest-training-request search: exact against brute force, streamed exact against held exact,
the faiss index against exact (recall), and never a request as its own neighbour."""
import numpy as np
import pytest
import torch

from rgalign_rl import neighbours
from rgalign_rl.neighbours import NeighbourIndex
from rgalign_rl.scoring import ScorerConfig


def clustered(n: int, d: int = 24, centres: int = 40, seed: int = 0) -> torch.Tensor:
    """Unit vectors around a few centres, as a ranker's user space is (requests of one need lie together)."""
    g = np.random.default_rng(seed)
    c = g.normal(size=(centres, d))
    x = c[g.integers(0, centres, n)] + 0.35 * g.normal(size=(n, d))
    return torch.nn.functional.normalize(torch.tensor(x, dtype=torch.float32), dim=-1)


@pytest.fixture(scope="module")
def space():
    vec = clustered(6000)
    bank = np.flatnonzero(np.arange(6000) % 3 != 0)  # the "training split": two rows in three
    return vec, bank, lambda rows: vec[torch.as_tensor(rows)]


def brute_force(vec, bank, rows, k):
    sim = vec[torch.as_tensor(rows)] @ vec[torch.as_tensor(bank)].T
    sim[torch.as_tensor(bank)[None, :] == torch.as_tensor(rows)[:, None]] = -2.0
    return bank[sim.topk(k, dim=1).indices.numpy()]


def test_exact_is_brute_force_and_never_the_row_itself(space):
    vec, bank, embed = space
    rows = np.arange(0, 6000, 7)  # in and out of the bank
    got = NeighbourIndex(bank, embed, "exact").search(rows, 10)
    assert np.array_equal(got, brute_force(vec, bank, rows, 10))
    assert not (got == rows[:, None]).any()
    assert np.isin(got, bank).all()


def test_streamed_exact_merges_blocks_to_the_same_neighbours(space, monkeypatch):
    vec, bank, embed = space
    monkeypatch.setattr(neighbours, "BLOCK", 700)  # 6 blocks of the bank
    rows = np.arange(1, 6000, 11)
    streamed = NeighbourIndex(bank, embed, "ivf").search(rows, 10, exact=True)
    assert np.array_equal(streamed, brute_force(vec, bank, rows, 10))  # nearest first, as the held bank gives


@pytest.fixture
def short_lists(monkeypatch):
    monkeypatch.setattr(neighbours, "LIST", 64)  # ~62 lists of 64 over the 4,000-row bank, as 5M rows make 4,880


def test_ivf_index_finds_most_exact_neighbours_and_never_the_row(space, short_lists):
    _, bank, embed = space
    rows = np.arange(0, 6000, 5)
    index = NeighbourIndex(bank, embed, "ivf", probe=8)
    got = index.search(rows, 10)
    assert got.shape == (len(rows), 10) and np.isin(got, bank).all()
    assert not (got == rows[:, None]).any()
    assert all(len(set(r)) == 10 for r in got.tolist())
    recall = index.recall(rows[:300], 10)
    assert recall >= 0.9, recall
    assert NeighbourIndex(bank, embed, "ivf", probe=1).recall(rows[:300], 10) < recall  # fewer lists read, fewer found


def test_ivf_rows_with_few_neighbours_in_their_lists_are_searched_again(space, short_lists):
    vec, bank, embed = space
    index = NeighbourIndex(bank, embed, "ivf", probe=1)
    k = 150  # more than one list of ~64 rows holds: every row needs the search over every list
    got = index.search(bank[:20], k)
    assert not (got == bank[:20, None]).any() and all(len(set(r)) == k for r in got.tolist())


def test_rows_faiss_leaves_short_get_their_exact_neighbours(space, short_lists):
    """faiss marks a missing result -1; a row still short after the search over every list (the graph over the
    centres need not reach them all) gets exact search, never -1 read as the last training request."""
    vec, bank, embed = space
    index = NeighbourIndex(bank, embed, "ivf")
    rows = np.arange(0, 60, 3)
    index.search(rows, 5)  # builds the index

    class Empty:  # an index that finds nothing, however many lists it reads
        nlist = 62

        def search(self, x, k):
            return np.zeros((len(x), k)), np.full((len(x), k), -1)

    index._ivf, index._read = Empty(), lambda lists: None
    got = index._keep(rows, np.full((len(rows), 6), -1), 5)
    assert np.array_equal(got, brute_force(vec, bank, rows, 5))


def test_auto_is_exact_for_published_worlds_and_bad_values_are_named(space):
    _, bank, embed = space
    assert NeighbourIndex(bank, embed, "auto").kind == "exact"
    assert NeighbourIndex(np.arange(neighbours.EXACT_UP_TO + 1), embed, "auto").kind == "ivf"
    with pytest.raises(ValueError, match="reward.scorer.neighbour_index: 'hnsw'"):
        ScorerConfig(neighbour_index="hnsw")
    with pytest.raises(ValueError, match="neighbours: 5000 nearest asked, the training split has 4000"):
        NeighbourIndex(bank, embed, "exact").search(bank[:3], 5000)
