"""A CPU fast path for TRL 1.16's fused LM head.

TRL 1.16 scores tokens through ``ChunkedLogProbFunction``: vocabulary tiles folded by a Triton kernel on
GPUs, by a loop of torch ops elsewhere, and on devices without Triton it scores *every* position, padding
and prompt included. On a 2-core CPU with a small vocabulary that is 2-3x slower than projecting the
labelled positions in one matmul (measured: SFT of the tiny reasoner 141.5 -> 567.6 samples/s, BENCHMARKS.md section 5). This module
swaps in a plain autograd implementation, for CPU tensors only; GPU runs keep TRL's kernel untouched.

Applied by :func:`install` (called by ``devices.trainer_kwargs``); the result is checked against TRL's own
kernel in tests/test_trl_cpu.py, so a TRL upgrade that changes the contract fails loudly.
"""
from __future__ import annotations

import torch

_installed = False


def plain_logprobs(hidden, weight, bias, targets, temperature, chunk_size=None, final_logit_softcapping=None,
                   logit_scale=1.0, outputs=("log_probs",)):
    """Same outputs as TRL's ``ChunkedLogProbFunction.apply``: per-token (log_probs, entropy,
    log_sum_sq_probs, mean_logits, is_top1), each None unless requested (log_probs always)."""
    z = torch.nn.functional.linear(hidden, weight, bias).float() * logit_scale
    if final_logit_softcapping is not None:
        z = final_logit_softcapping * torch.tanh(z / final_logit_softcapping)
    z = z / temperature
    logp = torch.log_softmax(z, dim=-1)
    log_probs = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1) if "entropy" in outputs else None
    log_sum_sq = torch.logsumexp(2 * logp, dim=-1) if "log_sum_sq_probs" in outputs else None
    mean_logits = z.mean(-1) if "mean_logits" in outputs else None
    # argmax returns the first maximum, as TRL's kernel does: a tie with an earlier token is not top-1
    is_top1 = (z.argmax(-1) == targets) if "is_top1" in outputs else None
    return log_probs, entropy, log_sum_sq, mean_logits, is_top1


class _CPUAwareLogProb:
    """Dispatches CPU tensors to :func:`plain_logprobs`, everything else to TRL's kernel."""

    def __init__(self, original):
        self.original = original

    def apply(self, hidden, *args):
        if hidden.device.type == "cpu":
            return plain_logprobs(hidden, *args)
        return self.original.apply(hidden, *args)


def install() -> None:
    """Patches trl.trainer.utils once; a no-op when TRL's internals are not the ones this was written for."""
    global _installed
    if _installed:
        return
    try:
        from trl.trainer import utils
    except ImportError:
        return
    if not hasattr(utils, "_ChunkedLogProbFunction") or not hasattr(utils, "_use_triton"):
        _installed = True  # a TRL without the fused head: nothing to speed up
        return
    original_use_triton = utils._use_triton
    utils._ChunkedLogProbFunction = _CPUAwareLogProb(utils._ChunkedLogProbFunction)
    # "compact" in TRL's forward means: score only the labelled positions; right for the plain path on CPU
    utils._use_triton = lambda device: device.type == "cpu" or original_use_triton(device)
    _installed = True
