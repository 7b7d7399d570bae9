"""YAML configs -> dataclasses, with clear errors for unknown keys and ``key=value`` overrides."""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml


def load_yaml(path: str | Path, overrides: list[str] | None = None) -> dict:
    with open(path) as f:
        cfg = yaml.safe_load(f) or {}
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected key.path=value")
        key, value = item.split("=", 1)
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
    return cfg


def from_dict(cls, data: dict | None, where: str = ""):
    """Builds dataclass ``cls`` from a dict, recursing into dataclass-typed fields; unknown keys raise."""
    data = data or {}
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))} in config section '{where or cls.__name__}'; "
                         f"known: {', '.join(sorted(names))}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        t, key = hints[name], f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(t):
            if not isinstance(value, dict):
                raise ValueError(f"config key {key}: expected a section (key: value pairs), got {value!r}")
            value = from_dict(t, value, key)
        else:
            value = _checked(value, t, key)
        kwargs[name] = value
    return cls(**kwargs)


def _checked(value, hint, key: str):
    """``value`` if it has the type the config field declares (an int where a float is asked is widened);
    otherwise a ValueError naming the key, e.g. ``align.dpo.beta=abc``."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if hint is Any or hint is dict or typing.get_origin(hint) is dict:
        ok = hint is Any or isinstance(value, dict)
    elif typing.get_origin(hint) is list:
        ok = isinstance(value, list) and all(_fits(v, typing.get_args(hint)[0]) for v in value)
    elif typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        for a in args:
            try:
                return _checked(value, a, key)
            except ValueError:
                pass
        ok = False
    else:
        ok = _fits(value, hint)
    if not ok:
        want = getattr(hint, "__name__", str(hint).replace("typing.", ""))
        raise ValueError(f"config key {key}: expected {want}, got {value!r} ({type(value).__name__})")
    if hint is float and isinstance(value, int):
        return float(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"config key {key}: expected a finite number, got {value!r}")
    return value


def _fits(value, hint) -> bool:
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (str, bool):
        return isinstance(value, hint)
    return True  # a type we do not check (e.g. a nested list's element type)


def resolve_seeds(cfg, raw: dict, seed: int, path: str = "") -> dict[str, int]:
    """Sets every ``seed`` field of the dataclass tree ``cfg`` that the config file did not set (``raw``: the
    loaded YAML with overrides) to ``seed``, so one ``--seed`` moves model initialisation, data order and
    sampling alike; returns every seed as ``{"key.path": value}`` (for metrics.json)."""
    out = {}
    for f in dataclasses.fields(cfg):
        value, key = getattr(cfg, f.name), f"{path}{f.name}"
        given = raw.get(f.name) if isinstance(raw, dict) else None
        if dataclasses.is_dataclass(value):
            out.update(resolve_seeds(value, given if isinstance(given, dict) else {}, seed, key + "."))
        elif f.name == "seed" and path:
            if not (isinstance(raw, dict) and "seed" in raw):
                setattr(cfg, "seed", seed)
            out[key] = getattr(cfg, "seed")
    return out
