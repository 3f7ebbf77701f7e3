"""Preprocessing, once per image: decode, resize the shortest side (bicubic), center-crop.

Equal to the Hugging Face ConvNext/ResNet image processor of microsoft/resnet-50
(shortest_edge 224, crop_pct 0.875: resize to 256, crop 224) up to its float rescaling, which
happens later on the device (`qcxr.data.augment.normalize`). Output stays uint8 and keeps a
single channel for grayscale sources: broadcasting to RGB after a per-channel resize is exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from qcxr.config import DataConfig

_DEFAULTS = DataConfig()
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


class BadImageError(ValueError):
    """An image file that is missing, truncated or cannot be decoded; the message names it."""


def open_image(path: str | Path) -> Image.Image:
    """The decoded image as PIL mode "L" (any grayscale, 8 or 16 bit) or "RGB"."""
    path = Path(path)
    if not path.is_file():
        raise BadImageError(f"{path}: image file not found")
    try:
        with Image.open(path) as image:
            image.load()
            return to_8bit(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise BadImageError(f"{path}: cannot decode image ({err})") from None


def to_8bit(image: Image.Image) -> Image.Image:
    """Mode "L" for grayscale sources (16-bit scaled by 255/65535), "RGB" for everything else."""
    if image.mode in ("L", "RGB"):
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        # 16-bit PNGs decode as I;16 or I; both span 0..65535.
        scale = 255.0 / 65535.0 if values.max(initial=0) > 255 or "16" in image.mode else 1.0
        return Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8), "L")
    if image.mode in ("LA", "1"):
        return image.convert("L")
    return image.convert("RGB")


def resized_size(width: int, height: int, shortest: int) -> tuple[int, int]:
    """(width, height) with the shortest side = `shortest`, the other truncated as HF does."""
    if width <= height:
        return shortest, int(shortest * height / width)
    return int(shortest * width / height), shortest


def resize_crop(
    image: Image.Image,
    resize_shortest: int = _DEFAULTS.resize_shortest,
    crop: int = _DEFAULTS.crop,
    resample: str = _DEFAULTS.resample,
) -> np.ndarray:
    """uint8 (crop, crop, C) with C = 1 for mode "L", 3 for "RGB"."""
    size = resized_size(*image.size, resize_shortest)
    if size != image.size:
        image = image.resize(size, _RESAMPLE[resample])
    width, height = image.size
    if width < crop or height < crop:
        raise ValueError(f"crop {crop} is larger than the resized image {width}x{height}")
    top, left = (height - crop) // 2, (width - crop) // 2  # as transformers' center_crop
    array = np.asarray(image, dtype=np.uint8)[top : top + crop, left : left + crop]
    return np.ascontiguousarray(array.reshape(crop, crop, -1))


def preprocess(
    path: str | Path,
    resize_shortest: int = _DEFAULTS.resize_shortest,
    crop: int = _DEFAULTS.crop,
    resample: str = _DEFAULTS.resample,
) -> np.ndarray:
    """The preprocessed uint8 (crop, crop, C) image of one file; BadImageError names the file."""
    return resize_crop(open_image(path), resize_shortest, crop, resample)
