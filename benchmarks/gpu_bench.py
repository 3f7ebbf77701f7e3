"""Report of benchmarks/gpu.sh: benchmarks/gpu-<device>.md (+ .json) from its work directory.

Reads what gpu.sh left in --work: env.json, nvidia-smi.txt, cells.tsv (each cell's verdict and
seconds), table3-*/cells/*.json (`qcxr bench table3`), sv-n*.out and mps.out (`qcxr bench
quantum --json`), features-*.out (benchmarks/features_throughput.py). Every number in the report
is read from those files; nothing is extrapolated except minutes per epoch (mean step x batches
per epoch), labelled as such. Prints the report's path.

    python benchmarks/gpu_bench.py --work /tmp/qcxr-gpu [--out benchmarks/gpu-h200.md] [--rehearsal]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
from pathlib import Path

from qcxr.bench.cells import read_cell
from qcxr.bench.tables import PAPER

PAPER_JAX = PAPER["pennylane-jax"]  # s per step, RTX A6000, ResNet50 backbone
PAPER_RATIO_19 = PAPER_JAX[(19, "dqc")] / PAPER_JAX[(19, "cdl")]  # 13x
BATCHES_PER_EPOCH = 2454  # bench.batches_per_epoch: the paper's training split at batch 32


def load_json(path: Path):
    """The last JSON document in a file (a --json stdout), or None."""
    if not path.exists():
        return None
    text = path.read_text().strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        start = text.rfind("\n{")
        try:
            return json.loads(text[start + 1 :]) if start >= 0 else None
        except json.JSONDecodeError:
            return None


def table3_cells(work: Path, backbone: str) -> dict[tuple[str, str, int], object]:
    cells = {}
    for path in sorted((work / f"table3-{backbone}" / "cells").glob("*.json")):
        cell = read_cell(path)
        cells[(cell.framework, cell.head, cell.num_labels)] = cell
    return cells


def fmt_cell(cell) -> str:
    if cell is None:
        return "not run"
    if cell.status != "ok" or cell.mean_s is None:
        return f"{cell.status}" + (f" ({cell.reason[:60]})" if cell.reason else "")
    return f"{cell.mean_s:.4f} ± {cell.std_s:.4f}"


def table3_section(work: Path, backbone: str, result: dict) -> list[str]:
    cells = table3_cells(work, backbone)
    title = "with the ResNet50 backbone" if backbone == "resnet50" else "head only (zero features)"
    lines = [f"### Table III, {title}", ""]
    if not cells:
        return lines + ["No cells recorded (see cells.tsv and the .err files).", ""]
    any_cell = next(iter(cells.values()))
    lines += [
        f"Batch {any_cell.batch}, {any_cell.warmup} warm-up + {any_cell.steps} timed steps, "
        f"device `{any_cell.device}`. Seconds per step, mean ± std.",
        "",
        "| labels | head | qcxr | PennyLane default.qubit + JAX | qcxr speed-up | paper JAX (A6000) "
        "| qcxr / paper |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = []
    for n in sorted({k[2] for k in cells}):
        for head in ("cdl", "dqc"):
            ours, pl = cells.get(("qcxr", head, n)), cells.get(("pennylane-jax", head, n))
            paper = PAPER_JAX.get((n, head)) if backbone == "resnet50" else None
            ok = lambda c: c is not None and c.status == "ok" and c.mean_s  # noqa: E731
            speedup = f"{pl.mean_s / ours.mean_s:.1f}x" if ok(ours) and ok(pl) else ""
            vs_paper = f"{ours.mean_s / paper:.2f}" if ok(ours) and paper else ""
            lines.append(
                f"| {n} | {head.upper()} | {fmt_cell(ours)} | {fmt_cell(pl)} | {speedup} | "
                f"{paper if paper is not None else ''} | {vs_paper} |"
            )
            for framework, cell in (("qcxr", ours), ("pennylane-jax", pl)):
                rows.append({
                    "framework": framework, "head": head, "n": n, "backbone": backbone,
                    "status": None if cell is None else cell.status,
                    "mean_s": None if cell is None else cell.mean_s,
                    "std_s": None if cell is None else cell.std_s,
                    "first_step_s": None if cell is None else cell.first_step_s,
                    "paper_s": paper if framework == "pennylane-jax" else None,
                })  # fmt: skip
    result[f"table3_{backbone}"] = rows
    lines.append("")
    if backbone == "resnet50":
        lines += ratio_lines(cells, result)
    return lines


def ratio_lines(cells: dict, result: dict) -> list[str]:
    n = max(k[2] for k in cells)
    lines = [f"### DQC / CDL step ratio at {n} labels, ResNet50 backbone", ""]
    for framework, name in (("qcxr", "qcxr"), ("pennylane-jax", "PennyLane + JAX")):
        dqc, cdl = cells.get((framework, "dqc", n)), cells.get((framework, "cdl", n))
        if dqc and cdl and dqc.mean_s and cdl.mean_s and dqc.status == cdl.status == "ok":
            ratio = dqc.mean_s / cdl.mean_s
            result.setdefault("ratio", {})[framework] = ratio
            lines.append(f"- {name}: {ratio:.2f}x")
        else:
            lines.append(f"- {name}: no ratio (a cell has no time)")
    lines += [
        f"- paper (A6000, JAX, 19 labels): {PAPER_RATIO_19:.1f}x; issue 17's goal for qcxr: "
        "at most 1.1x",
        "",
    ]
    finetune = []
    for head in ("cdl", "dqc"):
        cell = cells.get(("qcxr", head, n))
        if cell and cell.status == "ok" and cell.mean_s:
            ips = cell.batch / cell.mean_s
            minutes = cell.mean_s * BATCHES_PER_EPOCH / 60
            result.setdefault("finetune_images_per_s", {})[head] = ips
            finetune.append(
                f"- qcxr {head.upper()} at {n} labels: {ips:.1f} images/s "
                f"(extrapolated: {minutes:.1f} min per epoch of {BATCHES_PER_EPOCH} batches)"
            )
    if finetune:
        lines += [
            "### Fine-tuning steps (backbone + head, from the cells above)",
            "",
            *finetune,
            "",
        ]
    return lines


def quantum_rows(work: Path) -> tuple[list[dict], list[dict]]:
    sv = []
    for path in sorted(work.glob("sv-n*.out"), key=lambda p: int(re.findall(r"\d+", p.stem)[0])):
        doc = load_json(path)
        if doc is None:
            n = int(re.findall(r"\d+", path.stem)[0])
            sv.append({"n": n, "backend": "statevector", "error": "no result (killed or crashed)"})
        else:
            sv += doc["rows"]
    mps_doc = load_json(work / "mps.out")
    return sv, (mps_doc["rows"] if mps_doc else [])


def quantum_section(work: Path, result: dict) -> list[str]:
    sv, mps = quantum_rows(work)
    lines = ["### Head step at large n (`qcxr bench quantum`)", ""]
    fitted = [r["n"] for r in sv if not r.get("error")]
    result["statevector"], result["mps"] = sv, mps
    result["statevector_max_n"] = max(fitted) if fitted else None
    tried = ", ".join(str(r["n"]) for r in sv)
    lines.append(
        f"Statevector, largest n that trained at this batch: "
        f"{max(fitted) if fitted else 'none'} (tried {tried or 'nothing'}; the search stops at the "
        "first failure)."
    )
    lines += [
        "",
        "| backend | n | step (s) | compile + first (s) | note |",
        "|---|---|---|---|---|",
    ]
    for row in [*sv, *mps]:
        if row.get("error"):
            lines.append(f"| {row['backend']} | {row['n']} | | | {row['error'][:100]} |")
        else:
            lines.append(
                f"| {row['backend']} | {row['n']} | {row['mean_s']:.4f} ± {row['std_s']:.4f} "
                f"| {row['compile_first_s']:.2f} | {row['steps']} steps |"
            )
    return lines + [""]


def features_section(work: Path, result: dict) -> list[str]:
    lines = ["### Frozen-feature extraction, 224 px (benchmarks/features_throughput.py)", ""]
    for dtype in ("f32", "bf16"):
        doc = load_json(work / f"features-{dtype}.out")
        if doc is None:
            lines.append(f"- {dtype}: no result")
            continue
        result.setdefault("features", {})[dtype] = doc
        lines.append(
            f"- {doc['dtype']}, batch {doc['batch_size']}: {doc['images_per_s_median']} images/s "
            f"median ({doc['images_per_s_best']} best) over {len(doc['batch_s'])} batches, "
            f"compile {doc['warmup_compile_s']} s, device `{doc['device']}`"
        )
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, help="default: benchmarks/gpu-<device>.md")
    parser.add_argument("--wall-s", type=float)
    parser.add_argument("--rehearsal", action="store_true")
    args = parser.parse_args()
    work = args.work
    env = load_json(work / "env.json") or {}
    smi = (work / "nvidia-smi.txt").read_text() if (work / "nvidia-smi.txt").exists() else ""
    kind = env.get("device_kind", "unknown")
    slug = re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-").replace("nvidia-", "")
    out = args.out or Path("benchmarks") / f"gpu-{slug}.md"
    result: dict = {"environment": env, "nvidia_smi": smi.splitlines()[:1],
                    "rehearsal": args.rehearsal}  # fmt: skip
    head = [f"# Table III and qcxr at scale on `{kind}`", ""]
    if args.rehearsal:
        head += [
            "> **CPU REHEARSAL, NOT GPU NUMBERS.** `benchmarks/gpu.sh --cpu-rehearsal` at toy "
            "sizes and timeouts, to check the script end to end; no number below says anything "
            "about a GPU or about the paper's settings.",
            "",
        ]
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items() if v)
    cells_tsv = (work / "cells.tsv").read_text().strip() if (work / "cells.tsv").exists() else ""
    head += [
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- device: {', '.join(env.get('devices', [])) or 'unknown'} (platform "
        f"{env.get('platform', '?')})",
        f"- nvidia-smi (name, driver, memory): {smi.splitlines()[0] if smi else 'not recorded'}",
        f"- Python {env.get('python', '?')}; {versions}",
        f"- wall time of gpu.sh: {args.wall_s:.0f} s" if args.wall_s else "- wall time: ?",
        "",
        "Cells (name, verdict, seconds):",
        "",
        "```",
        cells_tsv,
        "```",
        "",
    ]
    body = [
        *table3_section(work, "resnet50", result),
        *table3_section(work, "none", result),
        *quantum_section(work, result),
        *features_section(work, result),
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(head + body))
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str))
    print(out)


if __name__ == "__main__":
    main()
