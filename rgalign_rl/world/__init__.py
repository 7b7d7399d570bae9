"""Worlds: the interchange format, its validation, and the worlds we ship (ShopSim, MovieLens)."""
from .schema import Problem, WorldError
from .world import World, atomic_dir, json_line, load_world, write_jsonl

__all__ = ["Problem", "World", "WorldError", "atomic_dir", "json_line", "load_world", "write_jsonl"]
