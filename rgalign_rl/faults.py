"""Faults a stage can hit, and the one switch that injects a kill for tests.

A fault (no DPO pair above the margin, a non-finite reward or loss) stops the stage with the step or the
sample ids in the message; the loop then rolls the stage back to the reasoner it started from (the last
good checkpoint) and goes on, or stops, as ``eval.on_fault`` says. A collapsed sampler (too many degenerate
queries) is caught by the stage's evaluation and rolled back the same way.
"""
from __future__ import annotations

import math
import os
import signal


class StageFault(RuntimeError):
    """A stage cannot produce a trustworthy reasoner (the message says why, with steps or sample ids)."""


class NonFiniteError(StageFault, FloatingPointError):
    """A reward or a loss that is NaN or infinite."""


def check_finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise NonFiniteError(f"{what} is {value}")
    return value


def finite_loss_callback():
    """A transformers callback that stops training at the first logged non-finite loss, naming the step (and
    the kill point ``trainer.saved``, right after a resumable checkpoint is written)."""
    from transformers import TrainerCallback

    class FiniteLoss(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            loss = (logs or {}).get("loss")
            if loss is not None:
                check_finite(float(loss), f"the training loss at step {state.global_step}")

        def on_save(self, args, state, control, **kw):
            kill_point("trainer.saved")

    return FiniteLoss()


def kill_point(name: str) -> None:
    """SIGKILLs this process when RGALIGN_KILL_AT names this point (tests of resume after a kill at exact
    places: inside the warm start, during Best-of-N scoring, during calibration)."""
    if os.environ.get("RGALIGN_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
