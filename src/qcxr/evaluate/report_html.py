"""report.html: the page `qcxr report` writes, from its tables, figures and notes.

Figures are embedded (base64 PNG), so the page is one file; a table is embedded only when it
is small (`EMBED_MAX_ROWS`, `EMBED_MAX_BYTES`), else the page links its CSV, which lies beside
report.html in summary/ (the demo's loss table alone is 300 KB).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from qcxr import rundir
from qcxr.config import EvalConfig
from qcxr.evaluate import report_text as T
from qcxr.evaluate.runs import ReportSettings, Run, random_weights
from qcxr.versions import REPORT_PACKAGES, package_versions

Tables = dict[str, tuple[str, pd.DataFrame]]  # key -> (CSV file name, table)
Figures = list[tuple[Path, str]]  # (PNG, caption)

EMBED_MAX_ROWS = 80  # a longer table is linked as its CSV, not embedded
EMBED_MAX_BYTES = 20_000  # nor one whose HTML would be larger than this

CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{margin-bottom:0} .meta{color:#666}
.banner{background:#b00020;color:#fff;font-weight:bold;padding:1em;font-size:1.2em;border-radius:4px}
.note{background:#fff4d6;border-left:4px solid #e69f00;padding:.5em 1em;margin:.5em 0}
figure{display:inline-block;margin:1em;vertical-align:top;max-width:100%}
figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.85em;color:#555}
table{border-collapse:collapse;font-size:.8em;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#f0f0f0} .tbl{overflow-x:auto;max-height:420px;overflow-y:auto}
dl.gloss dt{font-weight:bold;font-family:monospace} dl.gloss dd{margin:0 0 .4em 1.5em}
.src{font-weight:normal;color:#888;font-size:.8em} pre{background:#f6f6f6;padding:.5em;font-size:.8em}
"""


def table_html(frame: pd.DataFrame | None, title: str, csv_name: str | None = None) -> str:
    """A table under its title: embedded when small, else a link to its CSV (`csv_name`)."""
    if frame is None or frame.empty:
        return f"<h3>{html.escape(title)}</h3><p>(no data)</p>"
    source = f' <span class="src">({html.escape(csv_name)})</span>' if csv_name else ""
    head = f"<h3>{html.escape(title)}{source}</h3>"
    body = frame.to_html(index=False, na_rep="–", float_format=lambda v: f"{v:.4g}", border=0)
    if csv_name and (len(frame) > EMBED_MAX_ROWS or len(body) > EMBED_MAX_BYTES):
        return (
            f"{head}<p class='linked'>{len(frame)} rows × {frame.shape[1]} columns, not embedded: "
            f"<a href='{html.escape(csv_name)}'>{html.escape(csv_name)}</a> (beside this "
            "report)</p>"
        )
    return f"{head}<div class='tbl'>{body}</div>"


def figure_html(png: Path, caption: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return (
        f"<figure><img alt='{html.escape(png.stem)}' src='data:image/png;base64,{data}'>"
        f"<figcaption>{html.escape(png.name)}: {html.escape(caption)}</figcaption></figure>"
    )


def _items(lines: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul>"


def random_banner(runs: list[Run]) -> list[str]:
    random_runs = [r for r in runs if random_weights(r)]
    if not random_runs:
        return []
    names = ", ".join(r.name for r in random_runs)
    return [
        "<div class='banner' id='random-weights'>WARNING: the backbone of "
        f"{len(random_runs)} of {len(runs)} runs used RANDOM, not pretrained, weights "
        f"({html.escape(names)}). These numbers say nothing about ImageNet transfer "
        "learning and are not comparable with the paper.</div>"
    ]


def learned_nothing_box(found: dict[str, str], total: int) -> list[str]:
    if not found:
        return []
    items = "".join(
        f"<li><b>{html.escape(name)}</b>: {html.escape(said)}</li>" for name, said in found.items()
    )
    return [
        "<div class='banner' id='learned-nothing'>WARNING: in "
        f"{len(found)} of {total} runs the model learned nothing; their numbers are not "
        f"results.<ul>{items}</ul></div>"
    ]


def data_section(runs: list[Run]) -> list[str]:
    """What the runs ran on: data, label-file checksums, label set and backbone weights."""
    parts = ["<h2 id='data'>Data and model</h2>"]
    for record in T.data_records(runs):
        sums = record["label_files_sha256"]
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td><code>{html.escape(v)}</code></td></tr>"
            for k, v in sums.items()
        )
        checks = (
            f"<table><tr><th>label file</th><th>sha256</th></tr>{rows}</table>"
            if sums
            else "<p>(versions.json records no label-file checksums)</p>"
        )
        parts.append(
            f"<div class='data'><p><b>Data:</b> {html.escape(record['data'])}; format "
            f"{html.escape(record['format'])}.<br><b>Labels:</b> {html.escape(record['labels'])}"
            f".<br><b>Backbone weights:</b> {html.escape(record['weights'])}.<br>"
            f"<span class='meta'>runs: {html.escape(', '.join(record['runs']))}</span></p>"
            f"{checks}</div>"
        )
    return parts


def seeds_section(runs: list[Run]) -> list[str]:
    ran = T.seeds_ran(runs)
    lines = [
        f"{cell}: seed{'s' if len(s) > 1 else ''} {', '.join(map(str, s))} "
        f"({len(s)} run{'s' if len(s) > 1 else ''})"
        for cell, s in ran.items()
    ]
    listed = T.configured_seeds(runs)
    found = sorted({s for seeds in ran.values() for s in seeds})
    if listed and listed != found:
        lines.append(
            f"config.yaml's train.seeds lists {', '.join(map(str, listed))}; the seeds above "
            "are those whose run directories exist"
        )
    return [
        "<p id='seeds'><b>Seeds that ran</b> (from the run directories found):</p>",
        _items(lines),
    ]


def glossary(settings: EvalConfig) -> list[str]:
    items = "".join(
        f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>"
        for k, v in T.column_glossary(settings)
    )
    return [f"<h2 id='glossary'>What the columns mean</h2><dl class='gloss'>{items}</dl>"]


def notes_box(title: str, lines: list[str], element_id: str, text: str = "") -> list[str]:
    if not lines:
        return []
    said = f"<p>{html.escape(text)}</p>" if text else ""
    return [
        f"<div class='note' id='{element_id}'><b>{html.escape(title)}</b>{_items(lines)}{said}</div>"
    ]


def _titles(settings: EvalConfig) -> dict[str, str]:
    level = f"{100 * (1 - settings.alpha):g}%"
    return {
        "stats": "CDL vs DQC per label: paired t-test, eq. (4) % diff., Holm-adjusted p",
        "bootstrap": f"Bootstrap {level} confidence intervals of seed-mean AUROC "
        f"({settings.bootstrap} resamples)",
        "groups": "Head / medium / tail means per run",
        "auroc": f"AUROC, AP and F1 (threshold {settings.f1_threshold:g}) per run and label",
        "loss": "Loss curves (mean and std over seeds)",
        "benchmark": "Benchmark (Table III)",
        "runs": "Runs",
    }


def page(
    runs_dir: Path,
    runs: list[Run],
    settings: ReportSettings,
    tables: Tables,
    figures: Figures,
    notes: dict[str, Any],
) -> str:
    """report.html. `notes`: "general" (lines), "below_chance" and "one_seed" (lines),
    "learned_nothing" ({run name: line})."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>qcxr report: {html.escape(runs_dir.name)}</title><style>{CSS}</style></head><body>",
        f"<h1>qcxr report: {html.escape(runs_dir.name)}</h1>",
        f"<p class='meta'>{html.escape(str(runs_dir.resolve()))} · {len(runs)} runs · generated "
        f"{dt.datetime.now().isoformat(timespec='seconds')}</p>",
        f"<p class='meta' id='eval-settings'>Evaluation settings: "
        f"{html.escape(settings.describe())}.</p>",
        *random_banner(runs),
        *learned_nothing_box(notes["learned_nothing"], len(runs)),
        *data_section(runs),
        *seeds_section(runs),
        *(f"<p class='meta'>{html.escape(note)}</p>" for note in notes["general"]),
        *notes_box("Below chance (AUROC < 0.5)", notes["below_chance"], "below-chance",
                   T.BELOW_CHANCE_TEXT),
        *notes_box("What one seed cannot show", notes["one_seed"], "one-seed"),
        "<h2>Summary: mean AUROC, CDL vs DQC</h2>",
        table_html(tables["summary"][1], "Mean AUROC across seeds", tables["summary"][0]),
        *glossary(settings.eval),
        "<h2>Figures</h2>",
        *(figure_html(png, caption) for png, caption in figures),
        "<h2>Tables</h2>",
        *(table_html(tables[k][1], title, tables[k][0])
          for k, title in _titles(settings.eval).items() if k in tables),
    ]  # fmt: skip
    parts.append("<h2>Run configurations</h2>")
    for run in runs:
        text = (
            yaml.safe_dump(run.settings, sort_keys=False) if run.config else f"(no {rundir.CONFIG})"
        )
        parts.append(
            f"<details><summary>{html.escape(run.name)}</summary>"
            f"<pre>{html.escape(text)}</pre></details>"
        )
    parts.append("<h2>Software versions (this report)</h2>")
    parts.append(
        f"<pre>{html.escape(json.dumps(package_versions(REPORT_PACKAGES), indent=1))}</pre>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)
