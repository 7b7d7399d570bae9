"""The versions a run used, and the lock of the versions the test suite passed with.

`constraints.txt` at the repository root is written by `make lock` from a .venv whose `make test` passed;
`make` installs with it. pyproject.toml stays open for users; a run whose versions differ from the lock
says so once, because a different transformers or MKL build can move trained numbers (DESIGN.md s.10).
"""
from __future__ import annotations

import importlib.metadata as md
import re
from pathlib import Path

LOCK = Path(__file__).resolve().parents[1] / "constraints.txt"  # present in a source checkout
RECORDED = ("rgalign_rl", "torch", "transformers", "trl", "accelerate", "deepspeed", "peft", "datasets", "numpy", "faiss-cpu", "onnxruntime")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def versions(names=RECORDED) -> dict[str, str]:
    """{package: installed version} for ``names`` (missing packages left out)."""
    out = {}
    for p in names:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            pass
    return out


def read_lock(path: str | Path = LOCK) -> dict[str, str]:
    """{canonical package name: version} of a constraints file's ``name==version`` lines."""
    out = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[_canonical(name)] = version.strip()
    return out


def lock_differences(path: str | Path = LOCK, names=RECORDED) -> list[str]:
    """``name installed (locked L)`` for each of ``names`` whose installed version differs from the lock
    (local labels such as +cpu ignored); empty when there is no lock (an installed wheel)."""
    if not Path(path).exists():
        return []
    lock = read_lock(path)
    diffs = []
    for name, have in versions(names).items():
        want = lock.get(_canonical(name))
        if want is not None and have.split("+")[0] != want.split("+")[0]:
            diffs.append(f"{name} {have} (locked {want})")
    return diffs
