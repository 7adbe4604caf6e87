"""Command line: `decorbench demo` (the benchmark commands run | report | env follow)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="decorbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train an MLP on sklearn digits with BP and DBP and compare")
    demo.add_argument("--epochs", type=int, default=10)
    demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    from decorbench import demo as demo_module

    demo_module.main(args.epochs, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
