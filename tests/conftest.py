import fcntl
import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

# `make test` runs two pytest-xdist workers. Each is pinned to a CPU of its own, and every job it starts (the ranks
# of a 2-process run included) inherits that CPU: the workers never compete for a core (two torch jobs with 2
# threads each on 2 cores run >10x slower), and a run's thread budget (`threads: null`: the CPUs this process may
# use) is 1 there. The tiny models gain nothing from a second thread (a tiny loop: 63 s on 2 threads, 59 s on 1).
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER:
    _cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {_cpus[int(_WORKER.removeprefix("gw")) % len(_cpus)]})
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
THREADS = len(os.sched_getaffinity(0))  # torch threads for a job started by this test process
os.environ.setdefault("RGALIGN_CACHE", tempfile.mkdtemp(prefix="rgalign-test-cache-"))  # no shared state
# ... except SmolLM2's GGUF conversion (~40 s), which depends only on the installed packages: the venv keeps it
if sys.prefix != sys.base_prefix and os.access(sys.prefix, os.W_OK):
    os.environ.setdefault("RGALIGN_MODELS", os.path.join(sys.prefix, "rgalign-models"))
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

CONFIG = "recipes/configs/shopsim_tiny.yaml"


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (it turns them into node ids)
def pytest_collection_modifyitems(items):
    """The longest tests first (``@pytest.mark.slow(seconds=...)``: about how long on one CPU; 15 for a slow test
    without it). Under xdist the slow tests are dealt into one group per worker, the longest to the least loaded
    (``--dist loadgroup`` runs a group on one worker, in this order), and the fast ones fill in wherever a worker
    is free: plain ``load`` scheduling queued the longest tests behind one another on one worker."""
    def seconds(item):
        m = item.get_closest_marker("slow")
        return 0 if m is None else m.kwargs.get("seconds", 15)

    items.sort(key=lambda item: -seconds(item))  # stable: file order within a cost
    load = [0.0] * int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    for item in items:
        if seconds(item):
            g = load.index(min(load))
            load[g] += seconds(item)
            item.add_marker(pytest.mark.xdist_group(f"slow{g}"))


@contextmanager
def _locked(path: Path):
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _shared_dir(tmp_path_factory) -> Path:
    """A folder all of this session's xdist workers see (the parent of their own base temp), else the base temp."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if _WORKER else base


def made_once(tmp_path_factory, name: str, make) -> Path:
    """``make(path)`` runs once per test session, however many workers ask: the first builds ``name`` under a
    lock, the others wait and reuse it (a fixture built per worker cost each of them the same minute)."""
    root = _shared_dir(tmp_path_factory) / "shared"
    root.mkdir(exist_ok=True)
    path, done = root / name, root / f"{name}.done"
    with _locked(root / f"{name}.lock"):
        if not done.exists():
            shutil.rmtree(path, ignore_errors=True)  # what a worker that failed half-way left
            make(path)
            done.touch()
    return path


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """The tiny ShopSim world, generated once per test session."""
    from rgalign_rl.world.shopsim.simulator import ShopSimConfig, write_shopsim

    return made_once(tmp_path_factory, "tiny_world", lambda p: write_shopsim(p, ShopSimConfig(seed=0, size="tiny")))


@pytest.fixture(scope="session")
def tiny_ranker(tiny_world, tmp_path_factory):
    """A QE-Rec trained on the tiny world with teacher atlas's queries (text embeddings)."""
    import torch

    from rgalign_rl.ranker.queries import query_embeddings
    from rgalign_rl.ranker.train import TrainConfig, save_ranker, train_ranker
    from rgalign_rl.world import load_world

    def make(path):
        torch.set_num_threads(THREADS)
        world = load_world(tiny_world)
        q = query_embeddings(world, "teacher:atlas")
        model, enc, hist = train_ranker(world, "qe_rec", q, TrainConfig(epochs=6), log=lambda *a: None)
        save_ranker(path, model, enc, {"queries": "teacher:atlas", "query_mode": "text", "history": hist})

    return made_once(tmp_path_factory, "tiny_ranker", make)


@pytest.fixture(scope="session")
def tiny_reasoner(tiny_world, tmp_path_factory):
    """The tiny preset, warm-started briefly on the tiny world's teacher queries."""
    from rgalign_rl.reasoner.sft import SFTSettings, sft, teacher_pairs
    from rgalign_rl.reasoner.tiny import TinyReasonerConfig, build_tiny_reasoner
    from rgalign_rl.world import load_world

    def make(root):
        world = load_world(tiny_world)
        init = build_tiny_reasoner(world, root / "init", TinyReasonerConfig(vocab_size=1500, hidden_size=64,
                                                                           intermediate_size=128))
        sft(init, world, teacher_pairs(world), root / "warm", SFTSettings(epochs=2, max_pairs=3000, batch_size=32, lr=5e-3))

    return made_once(tmp_path_factory, "tiny_reasoner", make) / "warm"


@pytest.fixture(scope="session")
def one_process_run(tiny_world, tmp_path_factory):
    """The tiny loop (DPO), run once per session: (run folder, its metrics.json). Read it, never write into it:
    a test that continues a run copies it (:func:`copy_run`)."""
    from rgalign_rl.run import run

    out = made_once(tmp_path_factory, "dpo_run", lambda p: run(CONFIG, str(tiny_world), str(p), log=lambda *a: None))
    return out, json.loads((out / "metrics.json").read_text())


PREFIX = ("two_tower", "headroom", "reasoner_warm", "qe_rec", "control")  # the stages before the first round


def copy_run(src: Path, dst: Path, keep=PREFIX) -> Path:
    """A new run folder that starts from ``src``'s finished stages ``keep`` (its state.json names their paths
    inside ``src``), for a test about what comes after them: ``--resume`` it. The tiny loop's warm start alone
    is half of its minute."""
    done = json.loads((src / "state.json").read_text())["done"]
    missing = [k for k in keep if k not in done]
    assert not missing, f"{src} has not finished {missing}"
    from rgalign_rl.align.evaluate import scores_file

    dst.mkdir(parents=True)
    (dst / "state.json").write_text(json.dumps({"done": {k: done[k] for k in keep}}))
    for key in keep:  # the kept stages' test scores (the paired differences read them from the run folder)
        if scores_file(src, key).exists():
            scores_file(dst, key).parent.mkdir(exist_ok=True)
            shutil.copy(scores_file(src, key), scores_file(dst, key))
    return dst
