"""Processes and devices: the one place that decides which device every model uses and which rank writes.

A run is one process (``rgalign run``) or N (``torchrun`` / ``accelerate launch``). The rules
(DESIGN.md section 8):
- **one writer**: the main process writes every file of a run folder; the others wait at a barrier
  (:func:`main_first` / :func:`on_main`) and receive its result, so no rank reads a half-written folder
  and decisions are made once;
- **sharded request loops**: generation, embedding and reward scoring over many requests run on
  :func:`shard` (rank r takes every N-th item of a canonical order) and :func:`gather` puts the results
  back in request order, so N ranks compute what one would;
- **one device**: :func:`device` is the accelerator's device (CUDA where present, else CPU), for every model
  and every tensor fed to it.

Single-process runs never touch torch.distributed: every helper is then the identity.
"""
from __future__ import annotations

import os
import pickle
from contextlib import contextmanager

import torch

_STATE = None
_TIMEOUT_S = 10800  # the process group's collective timeout: see set_timeout
_SOLO = 0  # > 0 inside on_main: the main process works alone, every helper acts as in one process
_COUNTS: dict[str, int] = {}  # items this rank processed per kind of request loop, since the last shares()


def state():
    """accelerate's PartialState, created once. ``cpu=True`` without CUDA: under torchrun on CPU that makes
    it MULTI_CPU with the gloo backend (without it accelerate would see one process per rank)."""
    global _STATE
    if _STATE is None:
        _no_cpu_shm_build()
        from datetime import timedelta

        from accelerate import PartialState

        kw = {"timeout": timedelta(seconds=_TIMEOUT_S)} if _launched() else {}
        _STATE = PartialState(cpu=not torch.cuda.is_available(), **kw)
    return _STATE


def _no_cpu_shm_build() -> None:
    """Under a DeepSpeed launch on CPU, DeepSpeed's comm backend JIT-compiles a shared-memory all-reduce op when
    it starts (34 s on 2 cores, again in every fresh TORCH_EXTENSIONS_DIR) that only its inference all-reduce
    uses: ZeRO's collectives go through torch.distributed (gloo). Marked incompatible in DeepSpeed's op table, it is
    not built, and that all-reduce falls back to torch.distributed too. GPUs never build it."""
    from .devices import deepspeed_launch

    if not deepspeed_launch() or torch.cuda.is_available():
        return
    try:
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False  # probed once, then this dict is kept
    except Exception:  # noqa: BLE001 - another DeepSpeed version: it builds the op as before
        pass


def _launched() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def set_timeout(seconds: int) -> None:
    """How long a collective may wait before the run fails (``dist_timeout_s`` in the YAML). Main-only stages
    (ranker fits, RG-CL, evaluation) leave the other ranks waiting in a broadcast that long: NCCL's default
    (10 minutes) would kill a long one; a test sets ~2 minutes so a hang fails fast. Before the first use of
    :func:`state` only (the process group is made once)."""
    global _TIMEOUT_S
    if _STATE is not None and seconds != _TIMEOUT_S:
        raise RuntimeError("dist.set_timeout after the process group was made: call it before anything else")
    _TIMEOUT_S = seconds


def check_shared(*folders) -> None:
    """Every rank must see what the main process writes (the run folder, the caches): with N processes on
    several machines these folders have to be on a shared filesystem. Fails on every rank, clearly, at start-up
    rather than with misassigned results or a hang later."""
    import uuid
    from pathlib import Path

    if world_size() == 1:
        return
    token = broadcast(uuid.uuid4().hex)
    if is_main():
        for f in folders:
            Path(f).mkdir(parents=True, exist_ok=True)
            (Path(f) / f".rank0-{token}").write_text(token)
    barrier()
    missing = [str(f) for f in folders if not (Path(f) / f".rank0-{token}").exists()]
    blind = [(r, host, m) for r, (host, m) in enumerate(gather([(os.uname().nodename, missing)], world_size())) if m]
    barrier()
    if is_main():
        for f in folders:
            (Path(f) / f".rank0-{token}").unlink(missing_ok=True)
    if blind:
        r, host, m = blind[0]
        raise RuntimeError(f"rank {r} (of {world_size()}, on {host}) does not see what rank 0 wrote in "
                           f"{', '.join(m)}: every process must share these folders "
                           "(a shared filesystem across machines; set RGALIGN_CACHE to a shared path for the cache)")


def world_size() -> int:
    return 1 if _SOLO else state().num_processes


def rank() -> int:
    return 0 if _SOLO else state().process_index


def is_main() -> bool:
    return bool(_SOLO) or state().is_main_process


def device() -> torch.device:
    """Where models live and inputs go: the process's accelerator (its own GPU under N processes), else CPU."""
    return torch.device(state().device) if torch.cuda.is_available() else torch.device("cpu")


_BUDGET: int | None = None  # the machine's torch threads for this run, shared by its N local processes


def cpus_available() -> int:
    """The CPUs this process may run on (its affinity: a container's or taskset's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def set_threads(n: int | None = None) -> None:
    """Torch threads for a stage that asks for ``n`` on the whole machine (None: the run's budget, else every
    CPU this process may run on): on CPU, N processes share it (``n`` // N each; two jobs with 2 threads each
    on 2 cores run >10x slower). :func:`on_main` gives the waiting ranks' threads back to the main process."""
    global _BUDGET
    if n is not None or _BUDGET is None:
        _BUDGET = n or cpus_available()
    torch.set_num_threads(max(1, _BUDGET // world_size()) if device().type == "cpu" else _BUDGET)


def reset_peak_memory() -> None:
    if device().type == "cuda":
        torch.cuda.reset_peak_memory_stats(device())


def peak_memory_mb() -> float:
    """This process's peak accelerator memory since :func:`reset_peak_memory` (CUDA), or its peak resident
    memory so far (CPU: the OS keeps no per-stage peak)."""
    if device().type == "cuda":
        return round(torch.cuda.max_memory_allocated(device()) / 2**20, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def barrier() -> None:
    if world_size() > 1:
        state().wait_for_everyone()


def broadcast(obj):
    """The main process's ``obj`` on every rank (any picklable object)."""
    if world_size() == 1:
        return obj
    import torch.distributed as td

    box = [obj]
    td.broadcast_object_list(box, src=0)
    return box[0]


def shard(n: int) -> slice:
    """This rank's share of ``n`` items in a canonical order: every N-th one, starting at the rank."""
    return slice(rank(), n, world_size())


def gather(local: list, n: int) -> list:
    """Inverse of :func:`shard`: every rank's ``local`` results (in its shard's order), interleaved back into
    the ``n`` items' order, on every rank."""
    if world_size() == 1:
        return list(local)
    import torch.distributed as td

    parts = [None] * world_size()
    td.all_gather_object(parts, list(local))
    out = [None] * n
    for r, part in enumerate(parts):
        out[r::world_size()] = part
    return out


def count(kind: str, n: int) -> None:
    """Notes that this rank processed ``n`` items of a request loop (``generate``, ``embed``, ``score``...)."""
    _COUNTS[kind] = _COUNTS.get(kind, 0) + n


def shares() -> dict[str, list[int]]:
    """Per kind, how many items each rank processed since the last call (logged per stage: N ranks should
    each do about 1/N)."""
    mine = dict(_COUNTS)
    _COUNTS.clear()
    if world_size() == 1:
        return {k: [v] for k, v in sorted(mine.items())}
    every = gather([mine], world_size())
    return {k: [c.get(k, 0) for c in every] for k in sorted({k for c in every for k in c})}


def raise_together(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on every rank, collectively: a :class:`StageFault` raised on any rank (a non-finite
    reward or loss in this rank's share) is raised on every rank. Raised on one rank alone, it would leave the
    others waiting in the next collective until the timeout (3 hours by default)."""
    from .faults import StageFault

    out, fault = None, None
    try:
        out = fn(*args, **kwargs)
    except StageFault as e:
        fault = e
    faults = [f for f in gather([fault], world_size()) if f is not None]
    if faults:
        raise faults[0]
    return out


def together(fn):
    """``fn`` as a callable that every rank calls at the same points (a reward TRL calls on each rank's
    completions), each call through :func:`raise_together`; it keeps ``fn``'s ``__name__`` (TRL logs by it)."""
    def call(*args, **kwargs):
        return raise_together(fn, *args, **kwargs)

    call.__name__ = getattr(fn, "__name__", type(fn).__name__)
    return call


def sum_all(x: float) -> float:
    """The sum of a number over ranks (counts such as reward calls)."""
    return float(sum(gather([x], world_size())))


def on_main(fn, *args, **kwargs):
    """Runs ``fn`` on the main process only (it writes files, trains a ranker) and returns its result on every
    rank, after it finished. Inside, the helpers here act as in one process (a sharded loop called from ``fn``
    runs whole on the main process instead of waiting for ranks that never come). On CPU the main process
    takes the waiting ranks' threads meanwhile, so its reductions run on as many threads as one process would."""
    global _SOLO
    if world_size() == 1:
        return fn(*args, **kwargs)
    out = None
    if is_main():
        _SOLO += 1
        try:
            with _threads((_BUDGET or torch.get_num_threads() * state().num_processes) if device().type == "cpu" else None):
                out = fn(*args, **kwargs)
        except Exception as e:  # every rank raises it (a stage fault rolls back everywhere), none waits forever
            out = _Raised(e)
        finally:
            _SOLO -= 1
    out = broadcast(out)
    if isinstance(out, _Raised):
        raise out.error
    return out


class _Raised:
    """An exception of the main process inside :func:`on_main`, sent to every rank."""

    def __init__(self, error: Exception):
        try:
            pickle.dumps(error)
            self.error = error
        except Exception:
            self.error = RuntimeError(f"{type(error).__name__}: {error}")


@contextmanager
def main_first():
    """The main process runs the body first (it may create or cache something); the others run it after."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


@contextmanager
def _threads(n: int | None):
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
