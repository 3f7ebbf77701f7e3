"""Rendering Table III: summary rows, markdown tables, speed-ups and the paper's Table III.

Everything here reads a `Plan` (what was asked), the `Cell` records found and the `Machine`;
nothing runs a worker. Files written by `write_outputs` into the output directory:
steps-<backbone>.csv (every step time), summary-<backbone>.csv (one row per cell),
table3-<backbone>.md (Table III, minutes per epoch, speed-ups, compile time, peak memory, machine
and versions), table3-<backbone>.json and, through `qcxr.evaluate.plots.benchmark_bars`,
table3-<backbone>.png/.svg.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from qcxr.bench.cells import Cell, Plan
from qcxr.bench.frameworks import FRAMEWORKS, HEADS
from qcxr.bench.machine import Machine

TASK_NAMES = {8: "CXR-8", 14: "CXR-14", 19: "CXR-19"}
BASELINE = "qcxr"  # speed-ups are of this project against each other framework
# Table III of the paper (s per step, A6000, ResNet50 backbone): framework -> (n, head) -> mean.
PAPER = {
    "pennylane-tf": {(8, "cdl"): 0.06, (8, "dqc"): 0.08, (14, "cdl"): 0.06, (14, "dqc"): 0.43,
                     (19, "cdl"): 0.06, (19, "dqc"): 14.97},
    "pennylane-torch": {(8, "cdl"): 0.07, (8, "dqc"): 0.13, (14, "cdl"): 0.07, (14, "dqc"): 0.18,
                        (19, "cdl"): 0.07, (19, "dqc"): 1.89},
    "pennylane-jax": {(8, "cdl"): 0.06, (8, "dqc"): 0.06, (14, "cdl"): 0.06, (14, "dqc"): 0.08,
                      (19, "cdl"): 0.06, (19, "dqc"): 0.80},
}  # fmt: skip
STEP_FIELDS = ("framework", "head", "n", "backbone", "batch", "phase", "index", "seconds")
Key = tuple[str, int, str]  # (framework, n, head)


# ---------------------------------------------------------------- rows (CSV and JSON)


def summary_row(cell: Cell, batches_per_epoch: int) -> dict[str, Any]:
    """One flat row: framework, head, n, mean_s, std_s, ... (`plots.read_benchmark` reads it)."""
    times = cell.step_s
    return {
        "framework": cell.framework, "head": cell.head, "n": cell.num_labels,
        "backbone": cell.backbone, "batch": cell.batch, "status": cell.status,
        "warmup": cell.warmup, "steps": cell.timed_steps,
        "mean_s": cell.mean_s, "std_s": cell.std_s,
        "median_s": statistics.median(times) if times else None,
        "min_s": min(times) if times else None,
        "min_per_epoch": cell.per_epoch_min(batches_per_epoch),
        "first_step_s": cell.first_step_s, "build_s": cell.build_s,
        "peak_rss_mb": cell.peak_rss_mb, "rss_scope": cell.rss_scope,
        "device": cell.device, "python": cell.python,
        "versions": json.dumps(dict(cell.versions), sort_keys=True),
        "options": json.dumps(dict(cell.options or {}), sort_keys=True),
        "reason": cell.reason or "",
    }  # fmt: skip


def summary_rows(cells: Iterable[Cell], batches_per_epoch: int) -> list[dict[str, Any]]:
    """One row per cell, with the speed-up of `BASELINE` over the cell's framework."""
    rows = [summary_row(cell, batches_per_epoch) for cell in cells]
    baseline = {(r["n"], r["head"]): r["mean_s"] for r in rows if r["framework"] == BASELINE}
    for row in rows:
        ours = baseline.get((row["n"], row["head"]))
        row[f"speedup_{BASELINE}"] = row["mean_s"] / ours if ours and row["mean_s"] else None
    return rows


def steps_table(cells: Iterable[Cell]) -> list[dict[str, Any]]:
    """Every measured step: warm-ups (index 0 compiles) and timed steps."""
    out = []
    for cell in cells:
        for phase, times in (("warmup", cell.warmup_s), ("timed", cell.step_s)):
            for index, value in enumerate(times):
                row = {
                    "framework": cell.framework, "head": cell.head, "n": cell.num_labels,
                    "backbone": cell.backbone, "batch": cell.batch, "phase": phase,
                    "index": index, "seconds": value,
                }  # fmt: skip
                out.append(row)
    return out


# ---------------------------------------------------------------- markdown


def seconds(value: float | None, spread: float | None = None) -> str:
    """Mean (± spread) with enough decimals for two significant digits of the mean."""
    if value is None:
        return "—"
    decimals = 2 if value >= 0.1 else min(6, 1 - math.floor(math.log10(max(value, 1e-9))))
    text = f"{value:.{decimals}f}"
    return text if spread is None else f"{text} ± {spread:.{decimals}f}"


def _grid(cells: Sequence[Cell]) -> tuple[list[int], list[str], list[str]]:
    ns = sorted({c.num_labels for c in cells})
    heads = [h for h in HEADS if any(c.head == h for c in cells)]
    frameworks = [f for f in FRAMEWORKS if any(c.framework == f for c in cells)]
    return ns, heads, frameworks


def _lookup(cells: Sequence[Cell]) -> dict[Key, Cell]:
    return {(c.framework, c.num_labels, c.head): c for c in cells}


def _task(n: int) -> str:
    return TASK_NAMES.get(n, f"n={n}")


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def _cell_text(cell: Cell | None, plan: Plan, value: str) -> str:
    if cell is None:
        return "not run"
    if cell.status != "ok":
        return cell.status
    reduced = (cell.warmup, cell.timed_steps) != (plan.warmup, plan.steps)
    return value + (f" †{cell.warmup}/{cell.timed_steps}" if reduced else "")


def _grid_table(cells: Sequence[Cell], plan: Plan, value_of: Callable[[Cell], str]) -> list[str]:
    """One line per (n, head), one column per framework: `value_of` an ok cell, else why not."""
    ns, heads, frameworks = _grid(cells)
    found = _lookup(cells)
    body = []
    for n in ns:
        for head in heads:
            line = [_task(n), head.upper()]
            for fw in frameworks:
                cell = found.get((fw, n, head))
                text = value_of(cell) if cell and cell.status == "ok" else ""
                line.append(_cell_text(cell, plan, text))
            body.append(line)
    return _table(["Task", "Head", *frameworks], body)


def _introduction(plan: Plan, title: str) -> list[str]:
    what = (
        "ResNet50 (random weights) on zero 224x224 images"
        if plan.backbone == "resnet50"
        else "head only, on zero (B, 2048) features"
    )
    return [
        f"## {title or 'Table III'}: backbone {plan.backbone}",
        "",
        f"Seconds per training step (forward, mean BCE, backward, Adam 1e-4), batch {plan.batch}, "
        f"{what}; zero batch resident on the device. Mean ± std over {plan.steps} timed steps "
        f"after {plan.warmup} warm-up steps; † w/s marks a cell measured with w warm-up and "
        "s timed steps instead.",
        "",
    ]


def _costs(cell: Cell) -> str:
    return (
        f"{seconds(cell.first_step_s)} / {seconds(cell.build_s)} / "
        f"{(cell.peak_rss_mb or 0) / 1024:.2f}"
    )


def markdown(cells: Sequence[Cell], machine: Machine, plan: Plan, title: str = "") -> str:
    """Table III and its companions as markdown."""
    ns, heads, frameworks = _grid(cells)
    per_epoch = plan.batches_per_epoch
    out = _introduction(plan, title)
    out += _grid_table(cells, plan, lambda c: seconds(c.mean_s, c.std_s))
    out += ["", f"Minutes per epoch of {per_epoch} batches (mean step x batches):", ""]
    out += _grid_table(cells, plan, lambda c: f"{c.per_epoch_min(per_epoch):.2f}")
    out += ["", *speedups(cells, frameworks, ns, heads)]
    out += ["", *dqc_over_cdl(cells, frameworks, ns)]
    out += ["", "Compile + first step (s) / build (s) / peak RSS (GiB) of the process:", ""]
    out += _grid_table(cells, plan, _costs)
    out += ["", *paper_table(ns, heads)] if plan.backbone == "resnet50" else []
    out += ["", *environment(cells, frameworks, machine)]
    problems = [c for c in cells if c.status != "ok"]
    if problems:
        out += ["", "Cells without a time:", ""]
        out += [
            f"- {c.framework} {c.head.upper()} {_task(c.num_labels)}: {c.status}: {c.reason or ''}"
            for c in problems
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


def _speedup(ours: Cell | None, theirs: Cell | None) -> str:
    if not (ours and theirs and ours.mean_s and theirs.mean_s):
        return "—"
    ratio = theirs.mean_s / ours.mean_s
    return f"{ratio:.2f}x ({100 * (1 - 1 / ratio):.0f}%)"


def speedups(
    cells: Sequence[Cell], frameworks: list[str], ns: list[int], heads: list[str]
) -> list[str]:
    others = [f for f in frameworks if f != BASELINE]
    found = _lookup(cells)
    if BASELINE not in frameworks or not others:
        return []
    lines = [
        f"Speed-up of `{BASELINE}` (other framework's step / {BASELINE} step; in brackets the "
        'paper\'s "% faster" = 1 - ours/theirs):',
        "",
    ]
    body = [
        [
            _task(n),
            head.upper(),
            *(_speedup(found.get((BASELINE, n, head)), found.get((fw, n, head))) for fw in others),
        ]
        for n in ns
        for head in heads
    ]
    return lines + _table(["Task", "Head", *(f"vs {f}" for f in others)], body)


def dqc_over_cdl(cells: Sequence[Cell], frameworks: list[str], ns: list[int]) -> list[str]:
    found = _lookup(cells)
    body = []
    for n in ns:
        line = [_task(n)]
        for fw in frameworks:
            dqc, cdl = found.get((fw, n, "dqc")), found.get((fw, n, "cdl"))
            ok = dqc and cdl and dqc.mean_s and cdl.mean_s
            line.append(f"{dqc.mean_s / cdl.mean_s:.2f}x" if ok else "—")
        body.append(line)
    if all(cell == "—" for line in body for cell in line[1:]):
        return []
    return [
        "DQC step / CDL step (cost of the quantum head):",
        "",
        *_table(["Task", *frameworks], body),
    ]


def environment(cells: Sequence[Cell], frameworks: list[str], machine: Machine) -> list[str]:
    lines = [
        f"Machine: {machine.cpu}, {machine.logical_cpus} logical CPUs, "
        f"{machine.memory_gib:.1f} GiB RAM, {machine.platform}; measured {machine.date}.",
        "",
    ]
    body = []
    for fw in frameworks:
        own = [c for c in cells if c.framework == fw and c.status == "ok"]
        if not own:
            continue
        first = own[0]
        versions = sorted(first.versions.items())
        options = dict(first.options or {})
        body.append(
            [
                fw,
                first.device or "",
                ", ".join(f"{k} {v}" for k, v in versions if v),
                json.dumps(options, sort_keys=True) if options else "",
                f"`{first.python}`",
            ]
        )
    return lines + _table(["Framework", "Device", "Versions", "Options", "Interpreter"], body)


# ---------------------------------------------------------------- files


def write_csv(path: Path, rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)


def write_outputs(
    plan: Plan, out: Path, cells: list[Cell], machine: Machine, log: Callable[[str], None]
) -> dict[str, Path]:
    """The tables of `cells` in `out`, named by the plan's backbone; their paths by kind."""
    suffix = plan.backbone
    paths = {
        "steps": out / f"steps-{suffix}.csv",
        "summary": out / f"summary-{suffix}.csv",
        "markdown": out / f"table3-{suffix}.md",
        "json": out / f"table3-{suffix}.json",
    }
    rows = summary_rows(cells, plan.batches_per_epoch)
    write_csv(paths["steps"], steps_table(cells), STEP_FIELDS)
    fields = list(rows[0]) if rows else ["framework", "head", "n", "mean_s", "std_s"]
    write_csv(paths["summary"], rows, fields)
    paths["markdown"].write_text(markdown(cells, machine, plan))
    paths["json"].write_text(json.dumps({"machine": machine.as_dict(), "rows": rows}, indent=1))
    paths.update(figure(rows, out / f"table3-{suffix}", log))
    return paths


def figure(rows: Sequence[dict], stem: Path, log: Callable[[str], None]) -> dict[str, Path]:
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
