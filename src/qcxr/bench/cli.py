"""`qcxr bench quantum` and `qcxr bench table3`, and the `--config` option they share."""

from __future__ import annotations

import argparse
from typing import TypeVar

from qcxr.config import Config

T = TypeVar("T")


def register(sub: argparse._SubParsersAction) -> None:
    from qcxr.bench import quantum, table3

    bench = sub.add_parser("bench", help="benchmarks (quantum head step; Table III)")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="SUBCOMMAND")
    q = bench_sub.add_parser(
        "quantum", help="DQC head training step: qcxr statevector vs PennyLane, side by side"
    )
    quantum.add_arguments(q)
    q.set_defaults(func=quantum.run)
    t = bench_sub.add_parser(
        "table3", help="Table III: CDL and DQC steps in JAX, PyTorch, TensorFlow (PennyLane)"
    )
    table3.add_arguments(t)
    t.set_defaults(func=table3.run)


def add_config_argument(parser: argparse.ArgumentParser, settings: str) -> None:
    """--config YAML, whose `settings` give the defaults of the options left unset."""
    parser.add_argument(
        "--config",
        default=None,
        metavar="YAML",
        help=f"config or grid file (or a bundled config's name, e.g. paper) whose {settings} "
        "give the defaults of the options left unset; default: the paper's (qcxr.config)",
    )


def config_of(args: argparse.Namespace) -> Config:
    """The config named by --config (a config or grid file, or a bundled config's name such as
    "paper"; a grid's axes are ignored), else the paper's defaults."""
    from qcxr.config import from_dict
    from qcxr.train.grid import read_grid

    path = getattr(args, "config", None)
    return from_dict(read_grid(path).base) if path is not None else Config()


def given(value: T | None, default: T) -> T:
    """An option's value when it was given, else the config's."""
    return default if value is None else value
