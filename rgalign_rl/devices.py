"""Device, precision, logging and checkpoint settings shared by every trainer: bf16 on GPUs that
support it, fp32 on CPU, full (unpartitioned) model loads outside DeepSpeed engines, the run's
``report_to`` and its trainer-checkpoint cadence (set once per run by :func:`configure`)."""
from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path

_SETTINGS = {"report_to": "none", "checkpoint_every": 0, "progress": True, "serve_dtype": "float32",
             "gradient_checkpointing": False}
SERVE_DTYPES = ("auto", "float32", "bfloat16")


def native_bf16() -> bool:
    """Whether this process's device runs bfloat16 matmuls natively: a CUDA GPU that supports it, or a CPU
    with AVX-512 bf16 or AMX. Elsewhere bf16 is emulated and slower than float32 (an AVX2 CPU ran the
    SmolLM2 tiny loop's QE-Rec stage in 505 s in bf16)."""
    import torch

    from . import dist

    if dist.device().type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:  # not Linux: no way to tell, float32 is the safe choice
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_serve_dtype(name: str) -> str:
    """``auto`` -> bfloat16 where the device runs it natively, else float32; any other name as it is."""
    if name != "auto":
        return name
    return "bfloat16" if native_bf16() else "float32"


def configure(report_to: str = "none", checkpoint_every: int = 0, progress: bool = True,
              serve_dtype: str = "auto", gradient_checkpointing: bool = False) -> None:
    """Per-run settings: where TRL trainers report (none | tensorboard | ...), how often they save a
    resumable checkpoint (optimizer steps; 0 = never), whether long stages draw tqdm bars, the dtype
    of reasoner snapshots that only serve (generation and last-token embedding for rankers and rewards), and
    whether reasoner training recomputes activations in the backward pass (less memory, ~30% more time: for
    big reasoners). On CUDA, float32 matmuls may use TF32 (Ampere and later: several times faster; the
    reasoners train in bf16 there anyway)."""
    import torch

    if serve_dtype not in SERVE_DTYPES:
        raise ValueError(f"serve_dtype {serve_dtype!r}: one of {', '.join(SERVE_DTYPES)}")
    _SETTINGS.update(report_to=report_to, checkpoint_every=checkpoint_every, progress=progress,
                     serve_dtype=resolve_serve_dtype(serve_dtype), gradient_checkpointing=gradient_checkpointing)
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def gradient_checkpointing() -> bool:
    """Whether this run's reasoner trainers recompute activations (``reasoner.gradient_checkpointing``)."""
    return bool(_SETTINGS["gradient_checkpointing"])


def serve_dtype():
    """The torch dtype reasoner snapshots are loaded in to serve: float32, or bfloat16 (GPUs; CPUs with
    AVX-512 bf16 or AMX run it ~2.5x faster, BENCHMARKS.md section 5, "SmolLM2-135M on 2 CPU cores"). ``auto``
    was resolved by :func:`configure`. Training is unaffected."""
    import torch

    return getattr(torch, _SETTINGS["serve_dtype"])


def serve_tag() -> str:
    """A suffix for caches of served outputs: empty for float32 (the caches' names as before), else the dtype."""
    return "" if _SETTINGS["serve_dtype"] == "float32" else "-" + _SETTINGS["serve_dtype"]


def progress(iterable, desc: str, total: int | None = None):
    """A tqdm bar for long loops when the run wants bars and stderr is a terminal."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False, disable=None if _SETTINGS["progress"] else True)


def _bars() -> bool:
    import sys

    return bool(_SETTINGS["progress"]) and sys.stderr.isatty()


def train_bf16() -> bool:
    """Whether trainers run in bf16 mixed precision: on GPUs that support it; never on CPU."""
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def trainer_kwargs(checkpoints: bool = False) -> dict:
    """Keyword arguments for every TRL config: CPU-safe defaults, bf16 where a GPU supports it, the run's
    report_to and, for ``checkpoints=True`` trainers, resumable checkpoints every N steps."""
    import torch

    from .trl_cpu import install

    install()  # plain LM-head log-probs on CPU tensors (TRL's tiled kernel is 2-3x slower there)
    from . import dist

    cuda = torch.cuda.is_available()
    out = {"use_cpu": not cuda, "bf16": train_bf16(),
           "gradient_checkpointing": gradient_checkpointing(), "report_to": _SETTINGS["report_to"] if dist.is_main() else "none",
           "disable_tqdm": not _bars(), "save_strategy": "no"}
    if out["gradient_checkpointing"]:  # non-reentrant: works with frozen inputs (LoRA) as well
        out["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    if not cuda and dist.world_size() > 1:
        out["ddp_backend"] = "gloo"  # DeepSpeed on CPU needs it said (DESIGN.md s.5)
    every = _SETTINGS["checkpoint_every"]
    if checkpoints and every > 0:
        # save_only_model=False: optimizer, scheduler and RNG states too, so a resumed stage replays exactly
        out.update(save_strategy="steps", save_steps=every, save_total_limit=1)
    return out


def per_device(batch_size: int, key: str) -> int:
    """The per-process share of a global batch: N processes each take batch_size / N, so a run optimises the
    same way on 1 or N processes (same steps, same examples per step)."""
    from . import dist

    n = dist.world_size()
    if batch_size % n:
        raise ValueError(f"{key}: {batch_size} does not split over {n} processes; use a multiple of {n}")
    return batch_size // n


def last_checkpoint(trainer_dir: str | Path) -> str | None:
    """The newest complete ``checkpoint-N`` under a trainer's output dir (a kill mid-save leaves an
    incomplete one behind: it lacks trainer_state.json, which the Trainer writes last)."""
    done = [c for c in Path(trainer_dir).glob("checkpoint-*") if c.name[11:].isdigit() and _complete(c)]
    return str(max(done, key=lambda c: int(c.name[11:]))) if done else None


def _complete(checkpoint: Path) -> bool:
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
        return True
    except (OSError, ValueError):
        return False


def drop_checkpoints(root: str | Path) -> None:
    """Removes trainer checkpoints under ``root`` once their stage is recorded as finished."""
    for c in Path(root).glob("**/*.trainer/checkpoint-*"):
        shutil.rmtree(c, ignore_errors=True)


@contextmanager
def unpartitioned():
    """Loads full weights even after a ZeRO-3 trainer has switched transformers into partitioned loading
    (generation and embedding here run outside any DeepSpeed engine); trainers partition on prepare."""
    try:
        from transformers.integrations import deepspeed as hf_ds
    except ImportError:
        yield
        return
    saved = hf_ds._hf_deepspeed_config_weak_ref
    hf_ds._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_ds._hf_deepspeed_config_weak_ref = saved


def deepspeed_launch() -> bool:
    """Whether this process was launched for DeepSpeed (``accelerate launch`` with a DeepSpeed config)."""
    import os

    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def deepspeed_plugin(accelerator):
    """The accelerator's DeepSpeed plugin, or None when it does not run DeepSpeed."""
    return getattr(accelerator.state, "deepspeed_plugin", None)


def engine_info(accelerator) -> dict:
    """What actually ran a training stage: the distributed type and, under DeepSpeed, the ZeRO stage."""
    plugin = deepspeed_plugin(accelerator)
    return {"distributed_type": str(accelerator.distributed_type).rsplit(".", 1)[-1],
            "zero_stage": getattr(plugin, "zero_stage", None), "num_processes": accelerator.num_processes}


def partitioned(model) -> bool:
    """Whether ``model``'s weights are ZeRO-3 shards (each process holds a slice; DeepSpeed tags them ``ds_id``).
    Asked of the model itself, not of transformers' global ZeRO-3 flag, which only a TRL trainer sets."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


@contextmanager
def whole(model):
    """Every weight of ``model`` whole on every process inside the block (a collective under ZeRO-3: every
    process must enter it; changes made inside are dropped at the exit). Elsewhere a no-op."""
    if not partitioned(model):
        yield model
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
        yield model


def _copy_state(model) -> dict:
    """A CPU copy of ``model``'s state dict; tied weights stay one tensor (save_pretrained drops the duplicate)."""
    copies: dict[int, object] = {}
    return {k: copies.setdefault(v.data_ptr(), v.detach().to("cpu", copy=True)) for k, v in model.state_dict().items()}


def save_trained(accelerator, model, tok, out: str | Path) -> Path:
    """Saves ``model`` (an unwrapped HF model; a LoRA model merged, so every later stage reads a plain causal
    LM), its tokenizer and engine.json (:func:`engine_info`) into ``out`` atomically. Every process calls it.
    Under ZeRO-3 each process holds a shard of every weight: they gather them together (with the adapters, for
    the merge) and the main process saves a copy taken inside the gather. The model is not trained after this
    (a LoRA model has been merged in place)."""
    from .world import atomic_dir

    state_dict = None
    with whole(model):
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        if accelerator.is_main_process and partitioned(model):
            state_dict = _copy_state(model)  # the gathered weights are dropped at the block's exit
    if accelerator.is_main_process:
        with atomic_dir(out) as tmp:
            model.save_pretrained(tmp, state_dict=state_dict)
            tok.save_pretrained(tmp)
            (tmp / "engine.json").write_text(json.dumps(engine_info(accelerator)) + "\n")
    accelerator.wait_for_everyone()
    return Path(out)


def save_trainer_model(trainer, tok, out: str | Path) -> Path:
    """:func:`save_trained` for a TRL trainer's model."""
    return save_trained(trainer.accelerator, trainer.accelerator.unwrap_model(trainer.model), tok, out)
