"""The `qcxr` command. Each subsystem registers its own subcommands; this module only dispatches.

A subsystem module exposes `register(subparsers)`, which adds parsers whose `func` default takes
the parsed arguments and returns an exit code. Heavy imports happen inside those functions so
that `qcxr --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Order is the order of `qcxr --help`.
SUBSYSTEMS = (
    "qcxr.data.cli",  # synth, labels stats, cache build / verify
    "qcxr.models.cli",  # model summary
    "qcxr.features_cli",  # features
    "qcxr.train.cli",  # train, run
    "qcxr.evaluate.cli",  # evaluate, report, predict
    "qcxr.bench.cli",  # bench quantum, bench table3
    "qcxr.demo",  # demo
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qcxr",
        description="Hybrid quantum transfer learning for long-tailed chest X-ray classification.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBSYSTEMS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:  # a real missing dependency, not a subsystem still to come
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return dispatch(build_parser(), argv)


def dispatch(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse argv and run the chosen handler; input errors become one line and exit code 1."""
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"qcxr {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
