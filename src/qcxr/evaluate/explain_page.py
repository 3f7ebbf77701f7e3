"""Grad-CAM overlays as PNG files and one HTML page (`qcxr predict --explain OUT_DIR`).

OUT_DIR gets, per image n (from 1) with file stem s: `n-s.png`, the crop as the model saw it;
per top label k (from 1): `n-s-k-label.png`, the heat map over that crop, and
`n-s-k-label-cam.png`, the heat map alone (8-bit grayscale, 255 = 1); then `colorbar.png`,
`predictions.csv` (the probabilities of every label) and `index.html`.

The colormap is matplotlib's "turbo" (blue = low, red = high), blended with an opacity that
grows with the heat, so the X-ray stays readable where the model did not look. Figures are drawn
without pyplot, leaving the caller's matplotlib state alone.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

COLORMAP = "turbo"
OPACITY = (0.15, 0.65)  # overlay opacity at heat 0 and at heat 1
DISCLAIMER = (
    "The heat maps show where the model looked when it scored each label (Grad-CAM on its "
    "last convolutional block). They are not a diagnosis and do not show where a finding is; "
    "research software, not for clinical use."
)


def overlay(crop: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3): the colormapped heat (H, W) in [0, 1] blended over the crop."""
    import matplotlib

    colour = matplotlib.colormaps[COLORMAP](np.clip(heat, 0.0, 1.0))[..., :3]
    alpha = (OPACITY[0] + (OPACITY[1] - OPACITY[0]) * heat)[..., None]
    base = np.broadcast_to(crop, (*crop.shape[:2], 3)).astype(np.float64) / 255.0
    return np.round(255.0 * ((1.0 - alpha) * base + alpha * colour)).astype(np.uint8)


def colorbar_png(path: Path) -> None:
    """The legend: the colormap from 0 to 1, labelled."""
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.8, 0.9), layout="constrained")
    mappable = ScalarMappable(Normalize(0.0, 1.0), matplotlib.colormaps[COLORMAP])
    bar = fig.colorbar(mappable, cax=fig.add_subplot(), orientation="horizontal")
    bar.set_label("Grad-CAM heat: 0 = not used for the label, 1 = most used", fontsize=8)
    bar.ax.tick_params(labelsize=8)
    fig.savefig(path, dpi=120)


def slug(text: str) -> str:
    """A file-name-safe form of a label or image stem."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def image_files(explanation: Any, n: int) -> tuple[str, list[str]]:
    """File names of image n's crop and of its top labels' overlays."""
    stem = f"{n + 1:03d}-{slug(Path(str(explanation.probabilities['image'][n])).stem)}"
    labels = [explanation.labels[i] for i in explanation.top[n]]
    return f"{stem}.png", [f"{stem}-{k + 1}-{slug(name)}.png" for k, name in enumerate(labels)]


def write_pngs(out_dir: Path, explanation: Any) -> None:
    """Every crop, overlay and heat map of the explanation, and the colour bar."""
    for n, crop in enumerate(explanation.crops):
        crop_name, overlays = image_files(explanation, n)
        Image.fromarray(crop).save(out_dir / crop_name)
        for k, name in enumerate(overlays):
            heat = explanation.maps[n, k]
            Image.fromarray(overlay(crop, heat)).save(out_dir / name)
            cam = np.round(255.0 * np.clip(heat, 0.0, 1.0)).astype(np.uint8)
            Image.fromarray(cam, "L").save(out_dir / name.replace(".png", "-cam.png"))
    colorbar_png(out_dir / "colorbar.png")


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 70em; }
.note { background: #fff6d6; border-left: 4px solid #e0a800; padding: .6em .9em; }
.warning { background: #fde2e2; border-left: 4px solid #c0392b; padding: .6em .9em;
  font-weight: bold; }
table { border-collapse: collapse; font-size: .9em; }
td, th { padding: .15em .7em; text-align: left; border-bottom: 1px solid #ddd; }
td.p { text-align: right; font-variant-numeric: tabular-nums; }
tr.top td { font-weight: bold; background: #eef4ff; }
.row { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
figure { margin: 0; text-align: center; font-size: .85em; }
figure img { width: 224px; height: 224px; image-rendering: auto; display: block; }
section { border-top: 1px solid #bbb; margin-top: 1.5em; padding-top: .5em; }
"""


def _meta_rows(explanation: Any, identity: str) -> str:
    config = explanation.config
    rows = {
        "run": str(explanation.run_dir),
        "model": f"{config.train.mode} mode, {config.model.head} head, "
        f"{config.model.backbone} backbone ({identity}), best checkpoint",
        "label set": f"{config.task}: {', '.join(explanation.labels)}",
        "heat maps": f"top {explanation.top.shape[1]} labels per image by probability; crop "
        f"{explanation.crops.shape[1]}x{explanation.crops.shape[2]} as the model saw it",
    }
    cells = "".join(f"<tr><th>{k}</th><td>{html.escape(v)}</td></tr>" for k, v in rows.items())
    csv = '<tr><th>probabilities</th><td><a href="predictions.csv">predictions.csv</a></td></tr>'
    return f"<table>{cells}{csv}</table>"


def _probability_table(explanation: Any, n: int) -> str:
    probs = explanation.probabilities[explanation.labels].to_numpy()[n]
    top = set(explanation.top[n].tolist())
    rows = []
    for i in np.argsort(-probs, kind="stable"):
        css = ' class="top"' if i in top else ""
        name = html.escape(explanation.labels[i])
        rows.append(f'<tr{css}><td>{name}</td><td class="p">{probs[i]:.3f}</td></tr>')
    return f"<table><tr><th>label</th><th>probability</th></tr>{''.join(rows)}</table>"


def _image_section(explanation: Any, n: int) -> str:
    crop_name, overlays = image_files(explanation, n)
    path = html.escape(str(explanation.probabilities["image"][n]))
    figures = [
        f'<figure><img src="{crop_name}" alt="input"><figcaption>input</figcaption></figure>'
    ]
    for k, name in enumerate(overlays):
        i = int(explanation.top[n, k])
        p = float(explanation.probabilities[explanation.labels[i]][n])
        label = html.escape(explanation.labels[i])
        figures.append(
            f'<figure><img src="{name}" alt="Grad-CAM for {label}">'
            f"<figcaption>{k + 1}. {label} (p = {p:.3f})</figcaption></figure>"
        )
    table = _probability_table(explanation, n)
    return (
        f"<section><h2>{n + 1}. {path}</h2>"
        f'<div class="row">{"".join(figures)}{table}</div></section>'
    )


def page_html(explanation: Any, identity: str, banner: str | None) -> str:
    """index.html: what was run, the disclaimer, the legend, then one section per image."""
    run = html.escape(str(explanation.run_dir))
    warning = f'<p class="warning">{html.escape(banner)}</p>' if banner else ""
    sections = "".join(_image_section(explanation, n) for n in range(len(explanation.crops)))
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Grad-CAM: {run}</title><style>{STYLE}</style></head><body>"
        f'<h1>Grad-CAM heat maps</h1>{warning}<p class="note">{html.escape(DISCLAIMER)}</p>'
        f"{_meta_rows(explanation, identity)}"
        '<p><img src="colorbar.png" alt="colour bar: 0 (blue, not used) to 1 (red, most used)">'
        "</p>"
        f"{sections}</body></html>\n"
    )


def write_explanation(out_dir: str | Path, explanation: Any, identity: str,
                      banner: str | None = None) -> Path:  # fmt: skip
    """Write PNGs, predictions.csv and index.html into out_dir; returns index.html's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_pngs(out_dir, explanation)
    explanation.probabilities.to_csv(out_dir / "predictions.csv", index=False)
    index = out_dir / "index.html"
    index.write_text(page_html(explanation, identity, banner), encoding="utf-8")
    return index
