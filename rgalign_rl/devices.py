"""Device and precision settings in one place: bf16 on GPUs that support it, fp32 on CPU, and full
(unpartitioned) model loads outside DeepSpeed engines."""
from __future__ import annotations

from contextlib import contextmanager


def trainer_kwargs() -> dict:
    """Keyword arguments for every TRL config: CPU-safe defaults, bf16 where a GPU supports it."""
    import torch

    cuda = torch.cuda.is_available()
    return {"use_cpu": not cuda, "bf16": bool(cuda and torch.cuda.is_bf16_supported()),
            "gradient_checkpointing": False, "report_to": "none"}


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
