"""The `rgalign` command. Each subcommand parses its flags and calls the library; nothing else."""
from __future__ import annotations

import argparse
import json
import sys

from .world import WorldError, load_world


def _on_off(value: str) -> bool:
    if value not in ("on", "off"):
        raise argparse.ArgumentTypeError("expected on or off")
    return value == "on"


def cmd_world_shopsim(args) -> int:
    from .world.shopsim.simulator import ShopSimConfig, write_shopsim

    cfg = ShopSimConfig(seed=args.seed, size=args.size, semantic_gap=args.semantic_gap, teacher_bias=args.teacher_bias)
    out = write_shopsim(args.out, cfg)
    print(f"wrote ShopSim world ({args.size}, seed {args.seed}, semantic_gap={'on' if cfg.semantic_gap else 'off'}, "
          f"teacher_bias={'on' if cfg.teacher_bias else 'off'}) to {out}")
    return 0


def cmd_world_movielens(args) -> int:
    from .world.movielens import convert_movielens

    print(f"wrote MovieLens-100K world to {convert_movielens(args.out)}")
    return 0


def cmd_world_validate(args) -> int:
    world = load_world(args.dir)
    s = world.sizes()
    print(f"{args.dir}: valid world with {s['intents']} intents, {s['samples']} samples "
          f"({s['train_samples']} train / {s['valid_samples']} valid / {s['test_samples']} test), "
          f"{s['teacher_rows']} teacher rows{', oracle' if world.oracle else ''}")
    return 0


def cmd_world_stats(args) -> int:
    from .world.stats import format_table, world_stats

    world = load_world(args.dir)
    stats = world_stats(world, headroom=args.headroom, seed=args.seed)
    if args.json:
        print(json.dumps(stats, indent=1))
        return 0
    print(f"world {stats['world']}")
    print("sizes: " + ", ".join(f"{k}={v}" for k, v in stats["sizes"].items()))
    print("\ntest split, reference rankers (95% CIs over users):")
    print(format_table(stats["reference"]))
    if "headroom" in stats:
        h = stats["headroom"]
        print(f"\nheadroom: a ranker given the true need's text gains {h['gauc_gain']:+.4f} GAUC "
              f"(paired CI {h['gauc_gain_ci'][0]:+.4f}..{h['gauc_gain_ci'][1]:+.4f}) over the same ranker "
              f"without it ({h['without']['gauc']:.4f} -> {h['with_need']['gauc']:.4f})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rgalign", description="Ranking-Guided Alignment of an LLM reasoner to a ranker")
    sub = p.add_subparsers(dest="command", required=True)

    world = sub.add_parser("world", help="make, check and describe worlds").add_subparsers(dest="what", required=True)
    s = world.add_parser("shopsim", help="generate the ShopSim simulated world")
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", choices=["tiny", "default", "large"], default="default")
    s.add_argument("--semantic-gap", type=_on_off, default=True, metavar="on|off",
                   help="rare needs and cold intents (default on)")
    s.add_argument("--teacher-bias", type=_on_off, default=True, metavar="on|off",
                   help="the prolific teacher is misaligned in one segment (default on)")
    s.set_defaults(func=cmd_world_shopsim)
    s = world.add_parser("movielens", help="convert MovieLens-100K from the recbole wheel")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_world_movielens)
    s = world.add_parser("validate", help="check a world directory; prints FILE:LINE: field: problem")
    s.add_argument("dir")
    s.set_defaults(func=cmd_world_validate)
    s = world.add_parser("stats", help="sizes and reference rankers' test metrics")
    s.add_argument("dir")
    s.add_argument("--json", action="store_true")
    s.add_argument("--headroom", type=_on_off, default=True, metavar="on|off",
                   help="train the headroom rankers when the oracle has needs (default on; ~1 min)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_world_stats)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except WorldError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
