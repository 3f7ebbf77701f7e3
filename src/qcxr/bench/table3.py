"""Table III harness: one training step of CDL and DQC, timed in every framework.

Each framework runs in its own process (by default one per cell, so that the peak RSS belongs to
that cell), started under the framework's own interpreter when one is given: PennyLane dropped
TensorFlow after v0.43, so `pennylane-tf` may need an environment of its own, as the paper's
authors kept one per framework. Cells already measured in `--out` are reused, so an interrupted
run resumes where it stopped.

Outputs in `--out`: cells/*.json (one per cell, raw), steps-<backbone>.csv (every step time),
summary-<backbone>.csv (one row per cell), table3-<backbone>.md (Table III, minutes per epoch,
speed-ups, compile time, peak memory, machine and versions), table3-<backbone>.json and, through
`qcxr.evaluate.plots.benchmark_bars`, table3-<backbone>.png/.svg.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from qcxr.bench.frameworks import BACKBONES, FRAMEWORKS, HEADS
from qcxr.config import BenchConfig, TrainConfig

TASK_NAMES = {8: "CXR-8", 14: "CXR-14", 19: "CXR-19"}
BASELINE = "qcxr"  # speed-ups are of this project against each other framework
REUSE = ("same", "any", "none")
# Table III of the paper (s per step, A6000, ResNet50 backbone): framework -> (n, head) -> mean.
PAPER = {
    "pennylane-tf": {(8, "cdl"): 0.06, (8, "dqc"): 0.08, (14, "cdl"): 0.06, (14, "dqc"): 0.43,
                     (19, "cdl"): 0.06, (19, "dqc"): 14.97},
    "pennylane-torch": {(8, "cdl"): 0.07, (8, "dqc"): 0.13, (14, "cdl"): 0.07, (14, "dqc"): 0.18,
                        (19, "cdl"): 0.07, (19, "dqc"): 1.89},
    "pennylane-jax": {(8, "cdl"): 0.06, (8, "dqc"): 0.06, (14, "cdl"): 0.06, (14, "dqc"): 0.08,
                      (19, "cdl"): 0.06, (19, "dqc"): 0.80},
}  # fmt: skip


def python_option(framework: str) -> str:
    return "python_" + framework.replace("-", "_")


def env_python(framework: str) -> str:
    return "QCXR_PYTHON_" + framework.replace("-", "_").upper()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `qcxr bench table3`."""
    bench, train = BenchConfig(), TrainConfig()
    parser.add_argument(
        "--frameworks", nargs="+", choices=list(FRAMEWORKS), default=list(FRAMEWORKS)
    )
    parser.add_argument("--heads", nargs="+", choices=HEADS, default=list(HEADS))
    parser.add_argument(
        "--labels", nargs="+", type=int, default=[8, 14, 19], help="n: labels = qubits"
    )
    parser.add_argument(
        "--backbone",
        choices=BACKBONES,
        default="resnet50",
        help="resnet50 (random weights, 224x224 zero images) or none (zero (B, 2048) features)",
    )
    parser.add_argument("--batch", type=int, default=train.batch_size)
    parser.add_argument("--warmup", type=int, default=bench.warmup, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=bench.steps, help="timed steps")
    parser.add_argument(
        "--batches-per-epoch",
        type=int,
        default=bench.batches_per_epoch,
        help="extrapolation to minutes per epoch",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench/table3"))
    parser.add_argument(
        "--reuse",
        choices=REUSE,
        default="same",
        help="cells in --out to keep: ok with the same warm-up/steps (default); any (ok, or a "
        "memory/time limit hit); none",
    )
    parser.add_argument(
        "--isolate",
        choices=("cell", "framework"),
        default="cell",
        help="one process per cell (peak memory per cell) or per framework (faster)",
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds per process")
    parser.add_argument(
        "--max-rss-gib",
        type=float,
        default=None,
        help="kill a worker above this resident memory (default: 75%% of RAM)",
    )
    parser.add_argument(
        "--tables-only", action="store_true", help="run nothing: tables from the cells in --out"
    )
    parser.add_argument(
        "--tf-mode",
        choices=("xla", "graph"),
        default="xla",
        help="pennylane-tf step: tf.function with XLA (jit_compile, default) or graph only",
    )
    for framework in FRAMEWORKS:
        parser.add_argument(
            "--" + python_option(framework).replace("_", "-"),
            dest=python_option(framework),
            default=None,
            metavar="PYTHON",
            help=f"interpreter for {framework} (default ${env_python(framework)} or this one)",
        )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    """Measure the requested cells, then write and print the tables; 1 if a cell failed."""
    check_args(args)
    if threading.current_thread() is threading.main_thread():  # SIGTERM: kill the worker too
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    cells_dir = args.out / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    if args.max_rss_gib is None:  # never let one cell push a shared machine into the OOM killer
        args.max_rss_gib = 0.75 * machine_info()["memory_gib"] or None
    for framework in [] if args.tables_only else args.frameworks:
        measure_framework(framework, args, cells_dir)
    results = collect(args, cells_dir)
    rows = summary_rows(results, args.batches_per_epoch)
    machine = machine_info()
    paths = write_outputs(args, results, rows, machine)
    if args.json:
        print(json.dumps({"machine": machine, "rows": rows}, indent=1))
    else:
        print(paths["markdown"].read_text())
    log(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 1 if any(r["status"] == "error" for r in results) else 0  # limits are not errors


def check_args(args: argparse.Namespace) -> None:
    if any(n < 1 for n in args.labels):
        raise ValueError(f"--labels {args.labels}: every n must be >= 1")
    if args.batch < 1:
        raise ValueError(f"--batch {args.batch}: must be >= 1")
    if args.warmup < 1:
        raise ValueError(f"--warmup {args.warmup}: must be >= 1 (the first step compiles)")
    if args.steps < 1:
        raise ValueError(f"--steps {args.steps}: must be >= 1")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- running workers


def python_for(framework: str, args: argparse.Namespace) -> str:
    chosen = getattr(args, python_option(framework), None) or os.environ.get(env_python(framework))
    return chosen or sys.executable


def worker_env() -> dict[str, str]:
    """This checkout's sources first on the path, so another interpreter finds the workers."""
    src = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def worker_command(python: str, framework: str, *extra: str) -> list[str]:
    return [python, "-m", "qcxr.bench.frameworks.worker", "--framework", framework, *extra]


def probe(framework: str, python: str) -> dict[str, Any]:
    """Availability and versions of `framework` under `python`; never raises."""
    try:
        done = subprocess.run(
            worker_command(python, framework, "--probe"),
            capture_output=True,
            text=True,
            env=worker_env(),
            timeout=300,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return {"installed": False, "missing": [f"interpreter {python}: {err}"]}
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"installed": False, "missing": [f"interpreter {python}: {tail[0]}"]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def cell_name(framework: str, head: str, num_labels: int, backbone: str, batch: int) -> str:
    from qcxr.bench.frameworks.worker import cell_name as name

    return name(framework, head, num_labels, backbone, batch)


def reusable(path: Path, args: argparse.Namespace) -> bool:
    if args.reuse == "none" or not path.exists():
        return False
    result = json.loads(path.read_text())
    if args.reuse == "any":  # a limit that was hit is a result too
        return result.get("status") in ("ok", "memory", "timeout")
    same = (result.get("warmup"), result.get("steps")) == (args.warmup, args.steps)
    return result.get("status") == "ok" and same


def framework_options(framework: str, args: argparse.Namespace) -> list[str]:
    if framework == "pennylane-tf":
        return ["--option", f"tf_mode={args.tf_mode}"]
    return []


def measure_framework(framework: str, args: argparse.Namespace, cells_dir: Path) -> None:
    """Run the missing cells of one framework; a framework that is not installed is skipped."""
    python = python_for(framework, args)
    todo = [
        (head, n)
        for n in args.labels
        for head in args.heads
        if not reusable(cells_dir / f"{cell_name(framework, head, n, args.backbone, args.batch)}.json", args)
    ]  # fmt: skip
    if not todo:
        log(f"{framework}: all cells already measured in {cells_dir}")
        return
    found = probe(framework, python)
    if not found["installed"]:
        log(
            f"{framework}: skipped, not installed ({'; '.join(found['missing'])}); "
            f"install the extra (pip install 'qcxr[bench]') or pass "
            f"--{python_option(framework).replace('_', '-')} PYTHON"
        )
        for head, n in todo:
            skipped = failed_cell(framework, head, n, args, python)
            skipped.update(status="skipped", reason=f"not installed: {'; '.join(found['missing'])}")
            name = cell_name(framework, head, n, args.backbone, args.batch)
            (cells_dir / f"{name}.json").write_text(json.dumps(skipped))
        return
    if framework == "pennylane-tf" and not supports_tensorflow(found["versions"].get("pennylane")):
        log(
            f"{framework}: warning: PennyLane {found['versions']['pennylane']} is past the last "
            "release with TensorFlow support (0.43); its broadcast circuits fail from 13 wires. "
            "Pass --python-pennylane-tf with an environment that has pennylane<=0.43."
        )
    groups = [[cell] for cell in todo] if args.isolate == "cell" else [todo]
    for group in groups:
        run_worker(framework, python, group, args, cells_dir)


def supports_tensorflow(pennylane_version: str | None) -> bool:
    """PennyLane deprecated TensorFlow in 0.42 and dropped it after 0.43."""
    try:
        major, minor = (int(part) for part in (pennylane_version or "").split(".")[:2])
    except ValueError:
        return True  # unknown: let the cell show what happens
    return (major, minor) <= (0, 43)


def run_worker(
    framework: str,
    python: str,
    cells: list[tuple[str, int]],
    args: argparse.Namespace,
    cells_dir: Path,
) -> None:
    names = [cell_name(framework, h, n, args.backbone, args.batch) for h, n in cells]
    log(f"{framework}: measuring {', '.join(names)} with {python}")
    extra = [
        "--cells", *(f"{h}:{n}" for h, n in cells),
        "--batch", str(args.batch), "--backbone", args.backbone,
        "--warmup", str(args.warmup), "--steps", str(args.steps),
        "--out", str(cells_dir), *framework_options(framework, args),
    ]  # fmt: skip
    for name in names:  # a stale result must not pass for this run's
        (cells_dir / f"{name}.json").unlink(missing_ok=True)
    logs = cells_dir.parent / "logs"
    logs.mkdir(exist_ok=True)
    with open(logs / f"{names[0]}.log", "w") as log_file:
        process = subprocess.Popen(
            worker_command(python, framework, *extra),
            stdout=log_file,
            stderr=log_file,
            env=worker_env(),
        )
        try:
            verdict, elapsed = watch(process, args.timeout, args.max_rss_gib)
        finally:  # interrupted harness: leave no worker behind
            if process.poll() is None:
                process.kill()
                process.wait()
    for (head, n), name in zip(cells, names, strict=True):
        path = cells_dir / f"{name}.json"
        if not path.exists():  # killed, or crashed before writing its result
            failed = failed_cell(framework, head, n, args, python)
            failed.update(verdict or {"status": "error", "reason": f"worker died: {logs}"})
            path.write_text(json.dumps(failed))
        log(f"  {name}: {json.loads(path.read_text())['status']} ({elapsed:.1f} s)")


def rss_gib(pid: int) -> float:
    """Resident memory of a live process (Linux /proc; 0 where unknown)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024**2
    except (OSError, ValueError):
        pass
    return 0.0


def watch(
    process: subprocess.Popen, timeout: float | None, max_rss_gib: float | None
) -> tuple[dict[str, str] | None, float]:
    """Wait for a worker, killing it past the time or memory limit: (verdict or None, seconds).

    The memory limit protects a shared machine: PennyLane's backprop at n = 19 holds every
    intermediate state (about 11 GB in JAX, twice that in complex128 frameworks).
    """
    start = time.perf_counter()
    while process.poll() is None:
        elapsed = time.perf_counter() - start
        verdict = None
        if timeout is not None and elapsed > timeout:
            verdict = {"status": "timeout", "reason": f"killed after {timeout:g} s"}
        elif max_rss_gib is not None and rss_gib(process.pid) > max_rss_gib:
            verdict = {"status": "memory", "reason": f"killed above {max_rss_gib:g} GiB RSS"}
        if verdict:
            process.kill()
            process.wait()
            return verdict, elapsed
        time.sleep(0.2)
    return None, time.perf_counter() - start


def failed_cell(
    framework: str, head: str, n: int, args: argparse.Namespace, python: str
) -> dict[str, Any]:
    """The record of a cell that has no time; the caller sets status and reason."""
    return {
        "framework": framework, "head": head, "num_labels": n, "backbone": args.backbone,
        "batch": args.batch, "warmup": args.warmup, "steps": args.steps, "python": python,
    }  # fmt: skip


def collect(args: argparse.Namespace, cells_dir: Path) -> list[dict[str, Any]]:
    """Results of the requested grid, in table order; cells never measured are left out."""
    results = []
    for n in args.labels:
        for head in args.heads:
            for framework in FRAMEWORKS:
                if framework not in args.frameworks:
                    continue
                path = (
                    cells_dir / f"{cell_name(framework, head, n, args.backbone, args.batch)}.json"
                )
                if path.exists():
                    results.append(json.loads(path.read_text()))
    return results


# ---------------------------------------------------------------- tables


def summary_rows(results: Iterable[dict[str, Any]], batches_per_epoch: int) -> list[dict]:
    """One flat row per cell: framework, head, n, mean_s, std_s, ... (plots.read_benchmark)."""
    rows = []
    for r in results:
        times = r.get("step_s") or []
        mean = statistics.fmean(times) if times else None
        row = {
            "framework": r["framework"], "head": r["head"], "n": r["num_labels"],
            "backbone": r["backbone"], "batch": r["batch"], "status": r["status"],
            "warmup": r["warmup"], "steps": len(times) if times else r["steps"],
            "mean_s": mean,
            "std_s": statistics.stdev(times) if len(times) > 1 else (0.0 if times else None),
            "median_s": statistics.median(times) if times else None,
            "min_s": min(times) if times else None,
            "min_per_epoch": mean * batches_per_epoch / 60 if times else None,
            "first_step_s": r.get("first_step_s"), "build_s": r.get("build_s"),
            "peak_rss_mb": r.get("peak_rss_mb"), "rss_scope": r.get("rss_scope"),
            "device": r.get("device"), "python": r.get("python"),
            "versions": json.dumps(r.get("versions", {}), sort_keys=True),
            "options": json.dumps(r.get("options", {}), sort_keys=True),
            "reason": r.get("reason", ""),
        }  # fmt: skip
        rows.append(row)
    baseline = {(r["n"], r["head"]): r["mean_s"] for r in rows if r["framework"] == BASELINE}
    for row in rows:
        ours = baseline.get((row["n"], row["head"]))
        row[f"speedup_{BASELINE}"] = row["mean_s"] / ours if ours and row["mean_s"] else None
    return rows


def seconds(value: float | None, spread: float | None = None) -> str:
    """Mean (± spread) with enough decimals for two significant digits of the mean."""
    if value is None:
        return "—"
    decimals = 2 if value >= 0.1 else min(6, 1 - math.floor(math.log10(max(value, 1e-9))))
    text = f"{value:.{decimals}f}"
    return text if spread is None else f"{text} ± {spread:.{decimals}f}"


def _grid(rows: Sequence[dict]) -> tuple[list[int], list[str], list[str]]:
    ns = sorted({r["n"] for r in rows})
    heads = [h for h in HEADS if any(r["head"] == h for r in rows)]
    frameworks = [f for f in FRAMEWORKS if any(r["framework"] == f for r in rows)]
    return ns, heads, frameworks


def _lookup(rows: Sequence[dict]) -> dict[tuple[str, int, str], dict]:
    return {(r["framework"], r["n"], r["head"]): r for r in rows}


def _task(n: int) -> str:
    return TASK_NAMES.get(n, f"n={n}")


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def _cell_text(row: dict | None, args_steps: tuple[int, int], value: str) -> str:
    if row is None:
        return "not run"
    if row["status"] != "ok":
        return row["status"]
    reduced = (row["warmup"], row["steps"]) != args_steps
    return value + (f" †{row['warmup']}/{row['steps']}" if reduced else "")


def markdown(
    rows: Sequence[dict], machine: dict[str, Any], args: argparse.Namespace, title: str = ""
) -> str:
    """Table III and its companions as markdown."""
    ns, heads, frameworks = _grid(rows)
    cells = _lookup(rows)
    plan = (args.warmup, args.steps)
    what = (
        "ResNet50 (random weights) on zero 224x224 images"
        if args.backbone == "resnet50"
        else "head only, on zero (B, 2048) features"
    )
    out = [
        f"## {title or 'Table III'}: backbone {args.backbone}",
        "",
        f"Seconds per training step (forward, mean BCE, backward, Adam 1e-4), batch {args.batch}, "
        f"{what}; zero batch resident on the device. Mean ± std over {args.steps} timed steps "
        f"after {args.warmup} warm-up steps; † w/s marks a cell measured with w warm-up and "
        "s timed steps instead.",
        "",
    ]
    header = ["Task", "Head", *frameworks]

    def body(value_of) -> list[list[str]]:
        lines = []
        for n in ns:
            for head in heads:
                line = [_task(n), head.upper()]
                for fw in frameworks:
                    row = cells.get((fw, n, head))
                    text = value_of(row) if row and row["status"] == "ok" else ""
                    line.append(_cell_text(row, plan, text))
                lines.append(line)
        return lines

    out += _table(header, body(lambda r: seconds(r["mean_s"], r["std_s"])))
    out += ["", f"Minutes per epoch of {args.batches_per_epoch} batches (mean step x batches):", ""]
    out += _table(header, body(lambda r: f"{r['min_per_epoch']:.2f}"))
    out += ["", *speedups(rows, frameworks, ns, heads)]
    out += ["", *dqc_over_cdl(rows, frameworks, ns)]
    out += ["", "Compile + first step (s) / build (s) / peak RSS (GiB) of the process:", ""]
    out += _table(
        header,
        body(
            lambda r: (
                f"{seconds(r['first_step_s'])} / {seconds(r['build_s'])} / "
                f"{(r['peak_rss_mb'] or 0) / 1024:.2f}"
            )
        ),
    )
    out += ["", *paper_table(ns, heads)] if args.backbone == "resnet50" else []
    out += ["", *environment(rows, frameworks, machine)]
    problems = [r for r in rows if r["status"] != "ok"]
    if problems:
        out += ["", "Cells without a time:", ""]
        out += [
            f"- {r['framework']} {r['head'].upper()} {_task(r['n'])}: {r['status']}: {r['reason']}"
            for r in problems
        ]
    return "\n".join(out) + "\n"


def paper_table(ns: list[int], heads: list[str]) -> list[str]:
    """The paper's Table III (s per step, RTX A6000, pretrained ResNet50), for comparison."""
    ns = [n for n in ns if n in TASK_NAMES]
    if not ns:
        return []
    body = [
        [_task(n), head.upper(), *(f"{PAPER[fw][(n, head)]:.2f}" for fw in PAPER)]
        for n in ns
        for head in heads
    ]
    lines = ["The paper's Table III (RTX A6000 GPU; its Jax column is pennylane-jax here):", ""]
    return lines + _table(["Task", "Head", *PAPER], body)


def speedups(rows: Sequence[dict], frameworks: list[str], ns: list[int], heads: list[str]):
    others = [f for f in frameworks if f != BASELINE]
    cells = _lookup(rows)
    if BASELINE not in frameworks or not others:
        return []
    lines = [
        f"Speed-up of `{BASELINE}` (other framework's step / {BASELINE} step; in brackets the "
        'paper\'s "% faster" = 1 - ours/theirs):',
        "",
    ]
    body = []
    for n in ns:
        for head in heads:
            ours = cells.get((BASELINE, n, head))
            line = [_task(n), head.upper()]
            for fw in others:
                theirs = cells.get((fw, n, head))
                if not (ours and theirs and ours["mean_s"] and theirs["mean_s"]):
                    line.append("—")
                    continue
                ratio = theirs["mean_s"] / ours["mean_s"]
                line.append(f"{ratio:.2f}x ({100 * (1 - 1 / ratio):.0f}%)")
            body.append(line)
    return lines + _table(["Task", "Head", *(f"vs {f}" for f in others)], body)


def dqc_over_cdl(rows: Sequence[dict], frameworks: list[str], ns: list[int]) -> list[str]:
    cells = _lookup(rows)
    body = []
    for n in ns:
        line = [_task(n)]
        for fw in frameworks:
            dqc, cdl = cells.get((fw, n, "dqc")), cells.get((fw, n, "cdl"))
            ok = dqc and cdl and dqc["mean_s"] and cdl["mean_s"]
            line.append(f"{dqc['mean_s'] / cdl['mean_s']:.2f}x" if ok else "—")
        body.append(line)
    if all(cell == "—" for line in body for cell in line[1:]):
        return []
    return [
        "DQC step / CDL step (cost of the quantum head):",
        "",
        *_table(["Task", *frameworks], body),
    ]


def environment(rows: Sequence[dict], frameworks: list[str], machine: dict) -> list[str]:
    lines = [
        f"Machine: {machine['cpu']}, {machine['logical_cpus']} logical CPUs, "
        f"{machine['memory_gib']:.1f} GiB RAM, {machine['platform']}; measured "
        f"{machine['date']}.",
        "",
    ]
    body = []
    for fw in frameworks:
        own = [r for r in rows if r["framework"] == fw and r["status"] == "ok"]
        if not own:
            continue
        versions = json.loads(own[0]["versions"])
        body.append(
            [
                fw,
                own[0]["device"] or "",
                ", ".join(f"{k} {v}" for k, v in versions.items() if v),
                own[0]["options"] if own[0]["options"] != "{}" else "",
                f"`{own[0]['python']}`",
            ]
        )
    return lines + _table(["Framework", "Device", "Versions", "Options", "Interpreter"], body)


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    memory = 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = int(line.split()[1]) / 1024**2
    except OSError:  # not Linux: keep what platform says
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "memory_gib": memory,
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d"),
    }


# ---------------------------------------------------------------- files


def steps_table(results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every measured step: warm-ups (index 0 compiles) and timed steps."""
    out = []
    for r in results:
        for phase in ("warmup", "step"):
            for index, value in enumerate(r.get(f"{phase}_s") or []):
                out.append(
                    {
                        "framework": r["framework"],
                        "head": r["head"],
                        "n": r["num_labels"],
                        "backbone": r["backbone"],
                        "batch": r["batch"],
                        "phase": "warmup" if phase == "warmup" else "timed",
                        "index": index,
                        "seconds": value,
                    }  # fmt: skip
                )
    return out


def write_csv(path: Path, rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)


STEP_FIELDS = ("framework", "head", "n", "backbone", "batch", "phase", "index", "seconds")


def write_outputs(
    args: argparse.Namespace, results: list[dict], rows: list[dict], machine: dict
) -> dict[str, Path]:
    suffix = args.backbone
    paths = {
        "steps": args.out / f"steps-{suffix}.csv",
        "summary": args.out / f"summary-{suffix}.csv",
        "markdown": args.out / f"table3-{suffix}.md",
        "json": args.out / f"table3-{suffix}.json",
    }
    write_csv(paths["steps"], steps_table(results), STEP_FIELDS)
    fields = list(rows[0]) if rows else ["framework", "head", "n", "mean_s", "std_s"]
    write_csv(paths["summary"], rows, fields)
    paths["markdown"].write_text(markdown(rows, machine, args))
    paths["json"].write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    paths.update(figure(rows, args.out / f"table3-{suffix}"))
    return paths


def figure(rows: Sequence[dict], stem: Path) -> dict[str, Path]:
    """Bars through the report's plotting module, when it is there and there is data."""
    measured = [r for r in rows if r["status"] == "ok"]
    if not measured:
        return {}
    try:
        import pandas as pd

        from qcxr.evaluate.plots import benchmark_bars
    except ImportError as err:
        log(f"no figure: {err}")
        return {}
    saved = benchmark_bars(pd.DataFrame(measured), stem)
    return {f"figure{i}": p for i, p in enumerate(saved)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="table3", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
