"""The CPU fast path must give TRL's fused LM head's numbers and gradients (so a TRL upgrade that changes
the contract fails here, not silently in training)."""
import pytest
import torch

from rgalign_rl.trl_cpu import plain_logprobs

kernels = pytest.importorskip("trl.kernels")
OUTPUTS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


@pytest.mark.parametrize("softcap,scale,temp", [(None, 1.0, 1.0), (30.0, 0.5, 0.7)])
def test_plain_logprobs_match_trl_kernel(softcap, scale, temp):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(37, 16, generator=g, requires_grad=True)
    weight = torch.randn(301, 16, generator=g, requires_grad=True)
    targets = torch.randint(0, 301, (37,), generator=g)
    ours = plain_logprobs(hidden, weight, None, targets, temp, 64, softcap, scale, OUTPUTS)
    theirs = kernels.ChunkedLogProbFunction.apply(hidden, weight, None, targets, temp, 64, softcap, scale, OUTPUTS)
    for name, a, b in zip(OUTPUTS, ours, theirs):
        assert a.dtype == b.dtype, name  # TRL combines these with masks (is_top1 must stay bool)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=name)
    gh, gw = torch.autograd.grad((ours[0] - 0.3 * ours[1]).sum(), (hidden, weight))
    th, tw = torch.autograd.grad((theirs[0] - 0.3 * theirs[1]).sum(), (hidden, weight))
    torch.testing.assert_close(gh, th, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gw, tw, rtol=1e-4, atol=1e-4)
