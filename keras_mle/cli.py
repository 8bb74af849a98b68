"""The `keras-mle` command line: `keras-mle demo --out DIR` (more subcommands register here)."""

from __future__ import annotations

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-mle", description="Maximum-likelihood fitting with Keras."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="run the articles' two experiments through fit() and the custom loops"
    )
    demo.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    demo.add_argument("--quick", action="store_true", help="fewer epochs, for smoke tests")
    demo.set_defaults(handler=_run_demo)
    return parser


def _run_demo(args) -> int:
    from keras_mle import demo

    demo.run(args.out, quick=args.quick)
    return 0


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
