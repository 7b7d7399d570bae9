"""Reward definitions: one small file each, selected by name (or ``module:attr``) in a YAML config.

A reward is a plain callable object (not an nn.Module: TRL mistakes any nn.Module for an HF reward
model) with TRL's ``reward_funcs`` signature ``(prompts, completions, **columns) -> list[float]``. The
same object scores Best-of-N candidates, builds DPO pairs and is PPO's reward.

To add one: drop ``reward/my_reward.py`` with a ``@register("my_reward")`` subclass of ``RankerReward``
(or any callable class), then set ``reward.name: my_reward`` in the YAML.
"""
from __future__ import annotations

import importlib
import pkgutil

REWARDS: dict[str, type] = {}


def register(name: str):
    def wrap(cls):
        if name in REWARDS:
            raise ValueError(f"reward {name!r} is registered twice")
        cls.name = name
        REWARDS[name] = cls
        return cls
    return wrap


def _discover() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


def get_reward_class(name: str) -> type:
    """A registered name, or ``package.module:attr`` for a reward living outside this folder."""
    if ":" in name:
        module, attr = name.split(":", 1)
        return getattr(importlib.import_module(module), attr)
    _discover()
    if name not in REWARDS:
        raise KeyError(f"unknown reward {name!r}; registered: {', '.join(sorted(REWARDS))} (or use module:attr)")
    return REWARDS[name]


class _Counted:
    """Adds the ``calls`` counter to a reward that keeps none (aligners spend a budget of reward calls)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)

    def __call__(self, prompts, completions, **columns):
        self.calls += len(completions)
        return self.fn(prompts, completions, **columns)


def build_reward(config: dict, scorer):
    """Builds the reward a config names: ``{"name": ..., **options}``; options go to the constructor."""
    options = {k: v for k, v in config.items() if k not in ("name", "scorer")}
    fn = get_reward_class(config["name"])(scorer, **options)
    return fn if hasattr(fn, "calls") else _Counted(fn)


def registered() -> list[str]:
    _discover()
    return sorted(REWARDS)
