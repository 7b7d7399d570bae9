import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """The tiny ShopSim world, generated once per test session."""
    from rgalign_rl.world.shopsim.simulator import ShopSimConfig, write_shopsim

    return write_shopsim(tmp_path_factory.mktemp("worlds") / "tiny", ShopSimConfig(seed=0, size="tiny"))
