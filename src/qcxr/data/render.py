"""Chest-like grayscale renderings for the synthetic study, each finding a label's texture.

An image is a smooth chest-like anatomy (body, lungs, heart, spine, ribs) with noise; each
finding adds patches of a label-specific texture (grating, checker, dot lattice or rings, at a
label-specific frequency and orientation) whose position, size, amplitude, frequency and angle
vary. Textures survive global average pooling of a CNN, even one with random weights, so a
linear head on pooled ResNet50 features can learn them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from qcxr.labels import CXR19

PATCHES_PER_FINDING = 2
NIH_LABEL_STRENGTH = 0.35  # texture amplitude in [0, 1] intensity units


@dataclass(frozen=True)
class Texture:
    family: str  # grating | checker | dots | rings
    cycles: float  # cycles per image width
    angle: float  # degrees


def label_textures(others: list[str] | tuple[str, ...] = ()) -> dict[str, Texture]:
    """One distinct texture per NIH label (CXR19 order), then one per label of `others`."""
    specs = [  # mid frequencies (16-36 cycles) survive a random ResNet50 best
        ("grating", 24, 0),
        ("checker", 12, 0),
        ("grating", 22, 45),
        ("grating", 26, 135),
        ("checker", 8, 45),
        ("checker", 26, 0),
        ("grating", 30, 90),
        ("grating", 20, 70),
        ("checker", 18, 45),
        ("grating", 36, 0),
        ("dots", 18, 0),
        ("rings", 30, 0),
        ("grating", 40, 45),
        ("grating", 16, 120),
        ("dots", 24, 45),
        ("dots", 32, 20),
        ("grating", 32, 160),
        ("rings", 20, 0),
        ("rings", 12, 0),
    ]
    textures = {name: Texture(*spec) for name, spec in zip(CXR19, specs, strict=True)}
    families = ("grating", "checker", "dots", "rings")
    extra = [n for n in others if n not in textures and n != "No Finding"]
    for k, name in enumerate(extra):
        textures[name] = Texture(families[k % 4], 12 + (7 * k) % 26, (47 * k) % 180)
    return textures


class Renderer:
    """Vectorised chest-like renderings at a fixed size, one call per image.

    Anatomy and the smooth background field come from small banks drawn once per renderer
    (its own seed) and are shifted per image: rendering then costs little more than the noise.
    """

    BANK = 16  # anatomy variants per (view, field of view)

    def __init__(self, height: int, width: int, seed: int = 0, labels: tuple[str, ...] = ()):
        self.height, self.width = height, width
        # x in [-w/h, w/h] so shapes stay round on non-square images; y in [-1, 1].
        aspect = width / height
        self.y = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
        self.x = np.linspace(-aspect, aspect, width, dtype=np.float32)[None, :]
        self.textures = label_textures(labels)
        self.seed = seed
        self.banks: dict[tuple, list[tuple[float, np.ndarray]]] = {}
        field_rng = np.random.default_rng([seed, 1])
        coarse = field_rng.standard_normal((2 * height // 16 + 2, 2 * width // 16 + 2))
        self.field = np.asarray(
            Image.fromarray(coarse.astype(np.float32), "F").resize(
                (2 * width, 2 * height), Image.Resampling.BICUBIC
            )
        )

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, sharp: float) -> np.ndarray:
        e = ((self.x - cx) / rx) ** 2 + ((self.y - cy) / ry) ** 2
        return np.clip((1.0 - e) * sharp, 0.0, 1.0)

    def anatomy(self, rng: np.random.Generator, s: float, lateral: bool) -> np.ndarray:
        """One chest-like rendering at field-of-view scale `s` (no noise, no findings)."""
        cx = rng.uniform(-0.04, 0.04)
        body = self.ellipse(cx, 0.05, 0.86 * s, 1.02 * s, 6.0)
        if lateral:
            lungs = self.ellipse(cx + 0.05, -0.02, 0.45 * s, 0.55 * s, 4.0)
            heart = self.ellipse(cx - 0.2 * s, 0.3 * s, 0.3 * s, 0.25 * s, 4.0)
            spine = np.exp(-(((self.x - cx - 0.55 * s) / 0.09) ** 2)) * body
        else:
            lungs = self.ellipse(cx - 0.37 * s, -0.02, 0.27 * s, 0.55 * s, 4.0)
            lungs += self.ellipse(cx + 0.37 * s, -0.02, 0.27 * s, 0.55 * s, 4.0)
            heart_rx = 0.25 * s * rng.uniform(0.9, 1.1)
            heart = self.ellipse(cx + 0.1 * s, 0.25 * s, heart_rx, 0.27 * s, 4.0)
            spine = np.exp(-(((self.x - cx) / 0.07) ** 2)) * body
        phase = rng.uniform(0, 2 * np.pi)
        ribs = np.cos(2 * np.pi * 4.5 * (self.y / s) + 1.5 * self.x**2 + phase)
        image = 0.08 + 0.55 * body + 0.12 * spine
        image += lungs * (rng.uniform(-0.33, -0.25) + 0.04 * ribs) * (1.0 - heart) + 0.12 * heart
        return image.astype(np.float32)

    def bank(self, scale: tuple[float, float], lateral: bool) -> list[tuple[float, np.ndarray]]:
        key = (scale, lateral)
        if key not in self.banks:
            rng = np.random.default_rng([self.seed, 2, int(lateral), int(1000 * scale[0])])
            scales = rng.uniform(*scale, size=self.BANK)
            self.banks[key] = [(float(s), self.anatomy(rng, float(s), lateral)) for s in scales]
        return self.banks[key]

    def texture(self, spec: Texture, u: np.ndarray, v: np.ndarray, cycles: float, angle: float):
        """Zero-ish-mean texture in [-1, 1] on local coordinates u, v (image-width units)."""
        k = 2 * np.pi * cycles
        a = np.deg2rad(angle)
        p, q = u * np.cos(a) + v * np.sin(a), -u * np.sin(a) + v * np.cos(a)
        if spec.family == "grating":
            return np.cos(k * p)
        if spec.family == "checker":
            return np.sign(np.cos(k * p) * np.cos(k * q))
        if spec.family == "dots":
            return 3.0 * np.maximum(np.cos(k * p) * np.cos(k * q), 0.0) ** 3 - 0.45
        return np.cos(k * np.sqrt(p * p + q * q))  # rings

    def add_finding(
        self, image: np.ndarray, name: str, rng: np.random.Generator, scale: float, strength: float
    ) -> None:
        spec = self.textures[name]
        radius = rng.uniform(0.2, 0.34) * scale
        cx = rng.choice([-1, 1]) * rng.uniform(0.15, 0.55) * scale
        cy = rng.uniform(-0.45, 0.4) * scale
        h, w = self.height, self.width
        # Work on the bounding box only: findings are small.
        to_row = (h - 1) / 2
        r0, r1 = (int(max(0, math.floor((c + 1) * to_row))) for c in (cy - radius, cy + radius))
        r1 = min(h, int(math.ceil((cy + radius + 1) * to_row)) + 1)
        aspect = w / h
        to_col = (w - 1) / (2 * aspect)
        c0 = int(max(0, math.floor((cx - radius + aspect) * to_col)))
        c1 = min(w, int(math.ceil((cx + radius + aspect) * to_col)) + 1)
        if r1 <= r0 or c1 <= c0:
            return
        y, x = self.y[r0:r1] - cy, self.x[:, c0:c1] - cx
        window = np.clip(1.0 - (x * x + y * y) / radius**2, 0.0, 1.0) ** 2
        # Local coordinates in units of the image width, so cycles are per image width.
        width_units = 2 * aspect
        cycles = spec.cycles * rng.uniform(0.9, 1.1) * scale
        angle = spec.angle + rng.uniform(-10, 10)
        pattern = self.texture(spec, x / width_units, y / width_units, cycles, angle)
        amplitude = strength * rng.uniform(0.6, 1.0)
        image[r0:r1, c0:c1] += amplitude * window * (pattern + 0.3)

    def render(
        self,
        findings: list[str],
        rng: np.random.Generator,
        *,
        scale: tuple[float, float] = (0.93, 1.05),
        lateral: bool = False,
        noise: float = 0.02,
        gamma: float = 1.0,
        contrast: float = 1.0,
        strength: float = NIH_LABEL_STRENGTH,
    ) -> np.ndarray:
        """uint8 (height, width) rendering with the given findings."""
        h, w = self.height, self.width
        s, base = self.bank(scale, lateral)[int(rng.integers(self.BANK))]
        dy, dx = (int(v) for v in rng.integers(-h // 40, h // 40 + 1, size=2))
        image = np.roll(base, (dy, dx), axis=(0, 1)) * np.float32(rng.uniform(0.9, 1.1))
        for name in findings:
            for _ in range(PATCHES_PER_FINDING):
                self.add_finding(image, name, rng, s, strength)
        fy, fx = (int(v) for v in rng.integers(0, (h, w)))
        image += 0.025 * self.field[fy : fy + h, fx : fx + w]
        image += noise * rng.standard_normal(image.shape, dtype=np.float32)
        if contrast != 1.0 or gamma != 1.0:
            image = np.clip((image - 0.5) * contrast + 0.5, 0.0, 1.0) ** gamma
        return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
