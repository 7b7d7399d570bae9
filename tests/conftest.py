import os
import tempfile

os.environ.setdefault("RGALIGN_CACHE", tempfile.mkdtemp(prefix="rgalign-test-cache-"))  # no shared state
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

CONFIG = "recipes/configs/shopsim_tiny.yaml"


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """The tiny ShopSim world, generated once per test session."""
    from rgalign_rl.world.shopsim.simulator import ShopSimConfig, write_shopsim

    return write_shopsim(tmp_path_factory.mktemp("worlds") / "tiny", ShopSimConfig(seed=0, size="tiny"))


@pytest.fixture(scope="session")
def tiny_ranker(tiny_world, tmp_path_factory):
    """A QE-Rec trained on the tiny world with teacher atlas's queries (text embeddings)."""
    import torch

    from rgalign_rl.ranker.queries import query_embeddings
    from rgalign_rl.ranker.train import TrainConfig, save_ranker, train_ranker
    from rgalign_rl.world import load_world

    torch.set_num_threads(2)
    world = load_world(tiny_world)
    q = query_embeddings(world, "teacher:atlas")
    model, enc, hist = train_ranker(world, "qe_rec", q, TrainConfig(epochs=6), log=lambda *a: None)
    return save_ranker(tmp_path_factory.mktemp("rankers") / "qe", model, enc,
                       {"queries": "teacher:atlas", "query_mode": "text", "history": hist})


@pytest.fixture(scope="session")
def tiny_reasoner(tiny_world, tmp_path_factory):
    """The tiny preset, warm-started briefly on the tiny world's teacher queries."""
    from rgalign_rl.reasoner.sft import SFTSettings, sft, teacher_pairs
    from rgalign_rl.reasoner.tiny import TinyReasonerConfig, build_tiny_reasoner
    from rgalign_rl.world import load_world

    world = load_world(tiny_world)
    root = tmp_path_factory.mktemp("reasoners")
    init = build_tiny_reasoner(world, root / "init", TinyReasonerConfig(vocab_size=1500, hidden_size=64,
                                                                       intermediate_size=128))
    return sft(init, world, teacher_pairs(world), root / "warm", SFTSettings(epochs=2, max_pairs=3000, batch_size=32, lr=5e-3))


@pytest.fixture(scope="session")
def one_process_run(tiny_world, tmp_path_factory):
    """The tiny loop (DPO) in this process: (run folder, metrics)."""
    from rgalign_rl.run import run

    out = tmp_path_factory.mktemp("runs") / "dpo"
    return out, run(CONFIG, str(tiny_world), str(out), log=lambda *a: None)
