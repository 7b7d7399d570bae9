"""YAML configs -> dataclasses, checked at load as strictly as a world: types, ranges and names.

A settings dataclass states each field's range next to the field::

    beta: Annotated[float, Positive] = 0.1            # > 0
    max_dropped: Annotated[float, Share] = 0.01       # in [0, 1]
    max_pairs: Annotated[int | None, Positive] = None  # None, or > 0
    rejected: Annotated[str, OneOf(("own", "any"))] = "own"

:func:`from_dict` (and :func:`build`, which collects instead of raising) checks a loaded YAML against that
schema: unknown keys, wrong types, values out of range, names outside an enumeration. Every violation is
collected, not only the first, and raised together as a :class:`ConfigError` whose lines read
``recipes/x.yaml:12: config key align.dpo.beta: must be > 0, got -1`` (the file and line where the YAML set
the key; none for a ``key.path=value`` override). :func:`load_yaml` refuses missing, unreadable or
malformed files and overrides the same way, one line each, before anything is written.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Annotated, Any

import yaml

__all__ = ["Annotated", "AtLeast", "Config", "ConfigError", "NonNegative", "OneOf", "Positive", "Range", "Share",
           "build", "check_fields", "from_dict", "load_yaml", "raise_problems", "resolve_seeds"]


class ConfigError(ValueError):
    """Everything wrong with a config, one line per problem (``problems``); the CLI prints each as ``error: ...``."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


# ---- ranges and enumerations, stated next to a field with typing.Annotated ---------------------------------
@dataclasses.dataclass(frozen=True)
class Range:
    """``lo <= value <= hi`` (``lo_open``: ``lo < value``); either bound may be None."""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False

    def problem(self, value) -> str | None:
        low = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
        if self.lo is not None and self.hi is not None and (low or value > self.hi):
            return f"must be in {'(' if self.lo_open else '['}{_show(self.lo)}, {_show(self.hi)}], got {_show(value)}"
        if low:
            return f"must be {'>' if self.lo_open else '>='} {_show(self.lo)}, got {_show(value)}"
        if self.hi is not None and value > self.hi:
            return f"must be <= {_show(self.hi)}, got {_show(value)}"
        return None


Positive = Range(lo=0, lo_open=True)  # rates, sizes, counts, temperatures
NonNegative = Range(lo=0)             # weights, coefficients, counts where 0 switches a thing off
Share = Range(lo=0, hi=1)             # probabilities and shares


def AtLeast(n: float) -> Range:  # noqa: N802  (reads like the other markers)
    return Range(lo=n)


@dataclasses.dataclass(frozen=True)
class OneOf:
    """One of ``choices`` (``noun``: the message reads "unknown NOUN 'x'; known: ..." instead of
    "'x' is not one of ...")."""
    choices: tuple
    noun: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", tuple(self.choices))

    def problem(self, value) -> str | None:
        if value in self.choices:
            return None
        known = ", ".join(map(str, self.choices))
        return f"unknown {self.noun} {value!r}; known: {known}" if self.noun else f"{value!r} is not one of {known}"


def _show(v) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


# ---- loading -----------------------------------------------------------------------------------------------
class Config(dict):
    """A loaded config: the YAML's mapping with the overrides applied. ``origin`` maps every key path the
    file set (``align.dpo.beta``) to ``FILE:LINE``; a key set afterwards (an override, ``--seed``) maps to
    None, so its problems carry no file position."""

    def __init__(self, data: dict, origin: dict[str, str | None] | None = None):
        super().__init__(data)
        self.origin = dict(origin or {})

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        _forget(self.origin, str(key))


def _forget(origin: dict, key: str) -> None:
    for k in [k for k in origin if k.startswith(key + ".")]:
        del origin[k]
    origin[key] = None


def _read(path: str | Path) -> str:
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        why = "not found"
    except IsADirectoryError:
        why = "is a directory, not a YAML file"
    except PermissionError:
        why = "cannot be read (permission denied)"
    except UnicodeDecodeError as e:
        why = f"not UTF-8 text (byte {e.start})"
    except OSError as e:
        why = f"cannot be read ({e.strerror or e})"
    raise ConfigError([f"config file {path}: {why}"])


def _positions(node, path: str, file: str, origin: dict, problems: list[str]) -> None:
    """``origin[key path] = FILE:LINE`` for every mapping key under ``node``; duplicate keys into ``problems``."""
    if not isinstance(node, yaml.MappingNode):
        return
    seen: set[str] = set()
    for k, v in node.value:
        name = str(k.value)
        key = f"{path}.{name}" if path else name
        if key in seen:
            problems.append(f"{file}:{k.start_mark.line + 1}: config key {key}: set twice in the same section")
        seen.add(key)
        origin[key] = f"{file}:{k.start_mark.line + 1}"
        _positions(v, key, file, origin, problems)


def load_yaml(path: str | Path, overrides: list[str] | None = None) -> Config:
    """The YAML at ``path`` with ``key.path=value`` overrides applied (each value read as YAML). A missing or
    unreadable file, a directory, a YAML syntax error (with its line), a top level that is not a mapping,
    a key set twice, or a malformed override raise a :class:`ConfigError`."""
    text = _read(path)
    file = str(path)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        problem, context = getattr(e, "problem", None), getattr(e, "context", None)
        what = f"{problem}{f' ({context})' if context else ''}" if problem else str(e)
        where = f"{file}:{mark.line + 1}" if mark is not None else file
        raise ConfigError([f"{where}: YAML syntax error: {what}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"config file {file}: the top level must be a mapping of config keys (key: value), "
                           f"got a {_kind(data)}"])
    origin: dict[str, str | None] = {}
    problems: list[str] = []
    _positions(node, "", file, origin, problems)
    if problems:
        raise ConfigError(problems)
    cfg = Config(data, origin)
    for item in overrides or []:
        problem = _override(cfg, item)
        if problem:
            problems.append(f"override {item!r}: {problem}")
    if problems:
        raise ConfigError(problems)
    return cfg


def _override(cfg: Config, item: str) -> str | None:
    """Applies one ``key.path=value`` to ``cfg``; the problem with it, or None."""
    key, sep, text = item.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        return "expected key.path=value, e.g. align.algorithm=ppo"
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return f"the value is not a YAML value ({getattr(e, 'problem', None) or e})"
    node: dict = cfg
    for i, p in enumerate(parts[:-1]):
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        elif not isinstance(nxt, dict):
            return f"config key {'.'.join(parts[: i + 1])} is a value ({nxt!r}), not a section"
        node = nxt
    node[parts[-1]] = value
    _forget(cfg.origin, ".".join(parts))
    return None


def _kind(value) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(value),
                                                                                              type(value).__name__)


# ---- checking ----------------------------------------------------------------------------------------------
class _Invalid(ValueError):
    """A value's problem (without its key); ``rule``: a range/enumeration problem rather than a type one."""

    def __init__(self, message: str, rule: bool = False):
        super().__init__(message)
        self.rule = rule


def from_dict(cls, data: dict | None, where: str = "", origin: dict | None = None):
    """Dataclass ``cls`` from a dict, recursing into dataclass-typed fields. Unknown keys, wrong types,
    values out of range and names outside an enumeration all raise, together, as one :class:`ConfigError`
    (``where``: the key path of ``data``; ``origin``: FILE:LINE per key path, default ``data.origin``)."""
    problems: list[tuple[str, str]] = []
    obj = build(cls, data, where, problems)
    raise_problems(problems, origin if origin is not None else getattr(data, "origin", None))
    return obj


def build(cls, data: dict | None, where: str, problems: list[tuple[str, str]]):
    """``cls`` from ``data``, appending ``(key path, problem)`` to ``problems`` for every bad key and using
    the field's default in its place, so that later checks still see a complete config."""
    data = data or {}
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    # a field may read a YAML key that is a Python keyword, ``class_ = field(metadata={"key": "class"})`` (its own
    # name is read too: a config written out with dataclasses.asdict reads back)
    names = [f.metadata.get("key", f.name) for f in fields]
    attr = {**{f.name: f.name for f in fields}, **{f.metadata.get("key", f.name): f.name for f in fields}}
    kwargs: dict[str, Any] = {}
    for key_name, value in data.items():
        key = f"{where}.{key_name}" if where else str(key_name)
        name = attr.get(key_name)
        if name is None:
            close = difflib.get_close_matches(str(key_name), names, n=1)
            problems.append((key, "unknown key" + (f" (did you mean {close[0]}?)" if close else "")
                             + f"; known in {where or 'the top level'}: {', '.join(sorted(names))}"))
            continue
        t = _bare(hints[name])
        if dataclasses.is_dataclass(t):
            if value is not None and not isinstance(value, dict):  # None: an empty section (`align:`)
                problems.append((key, f"expected a section (key: value pairs), got {value!r}"))
                continue
            kwargs[name] = build(t, value, key, problems)
            continue
        try:
            kwargs[name] = _checked(value, hints[name])
        except _Invalid as e:
            problems.append((key, str(e)))
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # a dataclass's own __post_init__ check
        problems.append((where, str(e)))
        return cls()


def check_fields(obj, where: str) -> None:
    """The loader's checks (type, range, enumeration) on dataclass ``obj`` built in code, not from a config file:
    ValueError naming ``where.field`` for the first bad field (call it from the dataclass's ``__post_init__``)."""
    hints = typing.get_type_hints(type(obj), include_extras=True)
    for f in dataclasses.fields(obj):
        if f.init and not dataclasses.is_dataclass(_bare(hints[f.name])):
            try:  # kept as the loader keeps it (an int where a float is asked is widened)
                object.__setattr__(obj, f.name, _checked(getattr(obj, f.name), hints[f.name]))
            except _Invalid as e:
                raise ValueError(f"{where}.{f.name}: {e}") from None


def raise_problems(problems: list[tuple[str, str]], origin: dict | None = None) -> None:
    """Raises a :class:`ConfigError` with every ``(key path, problem)``, each prefixed with FILE:LINE where
    the YAML set the key (or its nearest enclosing section)."""
    if not problems:
        return
    lines = []
    for key, message in problems:
        pos = _position(key, origin or {})
        lines.append((f"{pos}: " if pos else "") + (f"config key {key}: {message}" if key else message))
    raise ConfigError(lines)


def _position(key: str, origin: dict) -> str | None:
    parts = key.split(".") if key else []
    while parts:
        k = ".".join(parts)
        if k in origin:
            return origin[k]
        parts.pop()
    return None


def _bare(hint):
    """``hint`` without Annotated metadata."""
    return typing.get_args(hint)[0] if typing.get_origin(hint) is Annotated else hint


def _type_name(hint) -> str:
    hint = _bare(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "None"
    if typing.get_origin(hint) is list:
        return f"list[{_type_name(typing.get_args(hint)[0])}]"
    return getattr(hint, "__name__", str(hint).replace("typing.", ""))


def _checked(value, hint):
    """``value`` if it has the type (and lies in the range) the config field declares; an int where a float is
    asked is widened. Otherwise :class:`_Invalid` with the problem, e.g. ``expected float, got 'abc' (str)``."""
    if typing.get_origin(hint) is Annotated:
        base, *rules = typing.get_args(hint)
        value = _checked(value, base)
        if value is not None:
            for rule in rules:
                problem = rule.problem(value) if hasattr(rule, "problem") else None
                if problem:
                    raise _Invalid(problem, rule=True)
        return value
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
        for a in typing.get_args(hint):
            if a is type(None):
                continue
            try:
                return _checked(value, a)
            except _Invalid as e:
                if e.rule:  # the right type, out of range: that is the problem to report
                    raise
        ok = False
    else:
        ok = _fits(value, hint)
    if not ok:
        raise _Invalid(f"expected {_type_name(hint)}, got {value!r} ({type(value).__name__})")
    if hint is float and isinstance(value, int):
        return float(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise _Invalid(f"expected a finite number, got {value!r}")
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
