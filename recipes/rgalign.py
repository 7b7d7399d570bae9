"""Run the RGAlign closed loop from a YAML config.

    python recipes/rgalign.py --config recipes/configs/shopsim.yaml --out runs/shop [--world DIR] [--seed S] [key=value ...]
    accelerate launch --config_file accelerate_config.yaml recipes/rgalign.py --config ...
    accelerate launch --config_file recipes/accelerate/deepspeed_zero2.yaml recipes/rgalign.py --config ...
"""
import argparse

from rgalign_rl.run import run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--world")
    ap.add_argument("--out", default="runs/rgalign")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--until", help="stop after this stage (e.g. qe_rec)")
    ap.add_argument("overrides", nargs="*", help="key.path=value, e.g. align.algorithm=ppo")
    a = ap.parse_args()
    run(a.config, a.world, a.out, a.seed, a.overrides, a.resume, until=a.until)


if __name__ == "__main__":
    main()
