"""YAML configs -> dataclasses, with clear errors for unknown keys and ``key=value`` overrides."""
from __future__ import annotations

import dataclasses
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
        t = hints[name]
        if dataclasses.is_dataclass(t) and isinstance(value, dict):
            value = from_dict(t, value, f"{where}.{name}" if where else name)
        kwargs[name] = value
    return cls(**kwargs)
