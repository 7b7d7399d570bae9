"""Trainer precision/device settings in one place: bf16 on GPUs that support it, fp32 on CPU."""
from __future__ import annotations


def trainer_kwargs() -> dict:
    """Keyword arguments for every TRL config: CPU-safe defaults, bf16 where a GPU supports it."""
    import torch

    cuda = torch.cuda.is_available()
    return {"use_cpu": not cuda, "bf16": bool(cuda and torch.cuda.is_bf16_supported()),
            "gradient_checkpointing": False, "report_to": "none"}
