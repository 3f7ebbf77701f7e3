"""The `qcxr` command. Each subsystem registers its own subcommands; this module only dispatches.

A subsystem module exposes `register(subparsers)`, which adds parsers whose `func` default takes
the parsed arguments and returns an exit code. Heavy imports happen inside those functions so
that `qcxr --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from qcxr.labels import Task
from qcxr.rundir import RunError

# Order is the order of `qcxr --help`.
SUBSYSTEMS = (
    "qcxr.data.cli",  # synth, labels stats, cache build / verify
    "qcxr.models.cli",  # model summary
    "qcxr.features_cli",  # features
    "qcxr.train_cli",  # train, run
    "qcxr.runs_status",  # status
    "qcxr.evaluate.cli",  # evaluate, report
    "qcxr.evaluate.predict_cli",  # predict
    "qcxr.bench.cli",  # bench quantum, bench table3
    "qcxr.demo",  # demo
)


def comma_list(text: str) -> list[str]:
    """argparse type: "A,B , C" -> ["A", "B", "C"]."""
    return [part.strip() for part in text.split(",")]


def add_task_arguments(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """--task (a built-in label set or a list's name), --labels A,B,... and --labels-file."""
    from qcxr.labels import LABEL_SETS

    shown = f" (default {default})" if default else ""
    parser.add_argument(
        "--task",
        metavar="NAME",
        default=None,
        help=f"built-in label set: {', '.join(LABEL_SETS)}{shown}; or the name of the list "
        "given by --labels / --labels-file",
    )
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument(
        "--labels",
        type=comma_list,
        metavar="A,B,...",
        help="explicit label list (label i = qubit i)",
    )
    labels.add_argument("--labels-file", metavar="FILE", help="label list, one name per line")
    parser.set_defaults(task_default=default)


def labels_from_args(args: argparse.Namespace) -> list[str] | None:
    """The explicit label list of --labels or --labels-file, if any."""
    from qcxr.labels import read_labels_file

    if getattr(args, "labels_file", None):
        return read_labels_file(args.labels_file)
    return getattr(args, "labels", None) or None


def task_from_args(args: argparse.Namespace) -> Task:
    """The qcxr.labels.Task of --task / --labels / --labels-file; a list given without a name
    is named labels<n>."""
    from qcxr.labels import resolve_task

    labels = labels_from_args(args)
    name = args.task or (f"labels{len(labels)}" if labels else args.task_default)
    if name is None:
        raise ValueError("give --task NAME (or --labels / --labels-file)")
    return resolve_task(name, labels or ())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qcxr",
        description="Hybrid quantum transfer learning for long-tailed chest X-ray classification.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBSYSTEMS:
        importlib.import_module(name).register(sub)
    return parser


def subcommand_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser below `parser`, at any depth ("qcxr labels", "qcxr labels stats", ...)."""
    found: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # an alias is the same parser
                found += [child, *subcommand_parsers(child)]
    return found


def _record_progs(parser: argparse.ArgumentParser) -> None:
    # Each parser's default `command_prog` is its full name; the innermost chosen one is set
    # last, so an error names the whole subcommand ("qcxr labels stats"), not its first word.
    for child in subcommand_parsers(parser):
        child.set_defaults(command_prog=child.prog)


def main(argv: list[str] | None = None) -> int:
    return dispatch(build_parser(), argv)


def dispatch(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse argv and run the chosen handler; input errors become one line and exit code 1,
    prefixed with the whole subcommand's name ("qcxr labels stats: error: ...")."""
    _record_progs(parser)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RunError) as err:
        print(f"{getattr(args, 'command_prog', parser.prog)}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
