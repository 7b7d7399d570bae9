"""The `rgalign` command: its parser; each subcommand (commands.py) calls the library, nothing else.

Every input error (a bad flag, config file, config value, override or world) is one ``error: ...`` line on
stderr per problem and exit status 2 (argparse's convention), never a traceback; ``--debug`` (anywhere on the
command line) or ``RGALIGN_DEBUG=1`` re-raises it for the traceback."""
from __future__ import annotations

import argparse
import os
import sys

from . import commands
from .config import ConfigError
from .world import WorldError


def _on_off(value: str) -> bool:
    if value not in ("on", "off"):
        raise argparse.ArgumentTypeError("expected on or off")
    return value == "on"


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {n}")
    return n


def _positive_float(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not x > 0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {value}")
    return x


def _seed_list(value: str) -> list[int]:
    try:
        seeds = [int(x) for x in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None
    if any(x < 0 for x in seeds):
        raise argparse.ArgumentTypeError(f"seeds must be >= 0, got {value!r}")
    return seeds


def build_parser() -> argparse.ArgumentParser:
    from .world.shopsim.simulator import SIZES

    p = argparse.ArgumentParser(prog="rgalign", description="Ranking-Guided Alignment of an LLM reasoner to a ranker")
    p.add_argument("--debug", action="store_true",
                   help="show the traceback of an error (also RGALIGN_DEBUG=1; accepted anywhere on the line)")
    sub = p.add_subparsers(dest="command", required=True)

    world = sub.add_parser("world", help="make, check and describe worlds").add_subparsers(dest="what", required=True)
    s = world.add_parser("shopsim", help="generate the ShopSim simulated world")
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", choices=list(SIZES), default="default",
                   help="users (~5 requests each): tiny 400, small 5,500 (make demo), default 11,000, large 40,000, "
                        "huge 200,000 (~1M requests); paper 1,500,000 (~7.5M requests, 90 features, drawn in blocks, "
                        "samples in Parquet shards)")
    s.add_argument("--users", type=int, default=0, metavar="N", help="N users instead of the size's (0: the size's)")
    s.add_argument("--semantic-gap", type=_on_off, default=True, metavar="on|off",
                   help="rare needs and cold intents (default on)")
    s.add_argument("--cold-launch-day", type=int, metavar="DAY",
                   help="day the cold intents launch (default 21, a week before training ends; "
                        "28 = the valid period's start: zero-shot for every learner)")
    s.add_argument("--teacher-bias", type=_on_off, default=True, metavar="on|off",
                   help="the prolific teacher is misaligned in one segment (default on)")
    s.set_defaults(func=commands.cmd_world_shopsim)
    s = world.add_parser("movielens", help="convert MovieLens-100K from the recbole wheel")
    s.add_argument("--out", required=True)
    s.set_defaults(func=commands.cmd_world_movielens)
    s = world.add_parser("subset", help="a smaller world: N requests drawn from a world (each split in its share)")
    s.add_argument("src")
    s.add_argument("--out", required=True)
    s.add_argument("--requests", type=_positive_int, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=commands.cmd_world_subset)
    s = world.add_parser("validate", help="check a world directory; prints FILE:LINE: field: problem")
    s.add_argument("dir")
    s.set_defaults(func=commands.cmd_world_validate)
    s = world.add_parser("stats", help="sizes and reference rankers' test metrics")
    s.add_argument("dir")
    s.add_argument("--json", action="store_true")
    s.add_argument("--headroom", type=_on_off, default=True, metavar="on|off",
                   help="train the headroom rankers when the oracle has needs (default on; ~1 min)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=commands.cmd_world_stats)

    reasoner = sub.add_parser("reasoner", help="build reasoner presets").add_subparsers(dest="what", required=True)
    s = reasoner.add_parser("tiny", help="tokenizer + small Llama for a world, warm-started on its teachers")
    s.add_argument("--world", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--epochs", type=_positive_float, default=2.0)
    s.add_argument("--max-pairs", type=_positive_int, default=30000)
    s.add_argument("--no-warm", action="store_true", help="stop after building the random-init model")
    s.add_argument("--threads", type=_positive_int, default=2)
    s.set_defaults(func=commands.cmd_reasoner_tiny)
    s = reasoner.add_parser("smollm2", help="convert SmolLM2-135M-Instruct from its wheel; prints the folder")
    s.set_defaults(func=commands.cmd_reasoner_smollm2)

    ranker = sub.add_parser("ranker", help="train and evaluate rankers").add_subparsers(dest="what", required=True)
    s = ranker.add_parser("train", help="train a two-tower or QE-Rec ranker")
    s.add_argument("--world", required=True)
    s.add_argument("--arch", choices=["two_tower", "qe_rec_gated", "qe_rec"], default="qe_rec_gated",
                   help="qe_rec_gated: two-tower + a query term gated by the query's confidence; qe_rec: the paper's")
    s.add_argument("--queries", default="none", help="none | teacher:NAME | need | reasoner:PATH")
    s.add_argument("--query-mode", choices=["last_token", "text", "both"], default="both",
                   help="how reasoner queries are embedded (teacher and need queries always use text)")
    s.add_argument("--nest", metavar="TWO_TOWER_DIR",
                   help="start from this trained two-tower (its encoder and towers, frozen); the query paths start at zero")
    s.add_argument("--out", required=True)
    s.add_argument("--epochs", type=_positive_int, default=15)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=_positive_int, default=2)
    s.set_defaults(func=commands.cmd_ranker_train)
    s = ranker.add_parser("eval", help="test metrics of a saved ranker, with 95% CIs")
    s.add_argument("--world", required=True)
    s.add_argument("--ranker", required=True)
    s.add_argument("--split", choices=["train", "valid", "test"], default="test")
    s.add_argument("--json", action="store_true")
    s.add_argument("--threads", type=_positive_int, default=2)
    s.set_defaults(func=commands.cmd_ranker_eval)

    s = sub.add_parser("run", help="the whole closed loop from a YAML config")
    s.add_argument("--config", required=True)
    s.add_argument("--world")
    s.add_argument("--out", default="runs/rgalign")
    s.add_argument("--seed", type=int)
    s.add_argument("--resume", action="store_true", help="continue an interrupted run from its last finished stage")
    s.add_argument("--until", help="stop after this stage (two_tower, headroom, reasoner_warm, qe_rec, control, "
                                   "round1/rg_sft, ..., final; rg_sft, dpo, ... mean round 1's): metrics.json and "
                                   "report.md hold the stages so far; --resume continues")
    s.add_argument("overrides", nargs="*", help="key.path=value, e.g. align.algorithm=ppo")
    s.set_defaults(func=commands.cmd_run)

    s = sub.add_parser("diagnose", help="why a finished run did or did not move the ranking: per group, per stage")
    s.add_argument("run", help="a finished `rgalign run` folder")
    s.add_argument("--json", action="store_true", help="print the diagnosis as JSON (also kept in RUN/diagnose/)")
    s.add_argument("--threads", type=_positive_int, default=2)
    s.set_defaults(func=commands.cmd_diagnose)

    s = sub.add_parser("recommend", help="ranked intents for requests: features -> the stage's query -> its ranker")
    s.add_argument("run", help="a run folder, or a folder written by `rgalign export`")
    s.add_argument("--stage", default="final", help="final (default), control, qe_rec, two_tower, rg_sft, dpo, rg_cl, "
                                                    "calibrated_r1, ... or a state key (round1/calibrate)")
    s.add_argument("--requests", required=True, metavar="FILE.jsonl|-",
                   help="one request per line: a world sample row without clicked (- reads stdin)")
    s.add_argument("--top-k", type=_positive_int, default=3, help="intents per request (default 3)")
    s.add_argument("--out", help="write JSON lines here (all or nothing); default stdout")
    s.add_argument("--threads", type=_positive_int, default=2)
    s.set_defaults(func=commands.cmd_recommend)

    s = sub.add_parser("export", help="a stage's reasoner as a Hugging Face folder with a model card, "
                                      "its ranker and intent table beside it")
    s.add_argument("run", help="a run folder")
    s.add_argument("--stage", default="final", help="as for recommend (default final)")
    s.add_argument("--out", required=True)
    s.set_defaults(func=commands.cmd_export)

    s = sub.add_parser("compare", help="DPO vs PPO vs GRPO vs RLOO from the same RG-SFT checkpoint and reward budget")
    s.add_argument("--config", required=True)
    s.add_argument("--algos", default="dpo,ppo,grpo,rloo", help="comma-separated aligners")
    s.add_argument("--seeds", type=_seed_list, default=[0], help="comma-separated seeds")
    s.add_argument("--world")
    s.add_argument("--out", default="runs/compare")
    s.add_argument("--resume", action="store_true", help="continue an interrupted comparison")
    s.add_argument("overrides", nargs="*", help="key.path=value, e.g. align.reward_budget=4000")
    s.set_defaults(func=commands.cmd_compare)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("RGALIGN_DEBUG", "") not in ("", "0")
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    try:
        return args.func(args)
    except Exception as e:
        lines = _input_error(e)
        if debug or lines is None:  # not an input error: a bug, with its traceback
            raise
    except SystemExit as e:  # a command's own `raise SystemExit("error: ...")`
        if debug or not isinstance(e.code, str):
            raise
        lines = [e.code.removeprefix("error: ")]
    for line in lines:
        print(f"error: {line}", file=sys.stderr)
    return 2


def _input_error(e: Exception) -> list[str] | None:
    """The ``error:`` lines (without the prefix) of an input error, or None for any other exception."""
    if isinstance(e, ConfigError):
        return e.problems
    if isinstance(e, WorldError):
        return [str(e)]
    if isinstance(e, ValueError) and str(e).startswith("config key "):
        return [str(e)]
    if isinstance(e, OSError) and e.filename is not None:  # a missing or unreadable input file or folder
        return [f"{e.filename}: {e.strerror or e}"]
    if isinstance(e, FileNotFoundError):  # raised with a message of its own (e.g. a reasoner that is not a folder)
        return [str(e)]
    return None


if __name__ == "__main__":
    sys.exit(main())
