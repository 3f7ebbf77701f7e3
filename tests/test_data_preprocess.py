"""Preprocessing against PIL's own bicubic resize + center crop and the HF image processor."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from qcxr.data.augment import normalize
from qcxr.data.preprocess import BadImageError, preprocess


def chest_like(size: int, seed: int) -> np.ndarray:
    """A smooth-plus-noise uint8 image (bicubic overshoot and clipping both exercised)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    image = 128 + 90 * np.sin(7 * x) * np.cos(5 * y) + rng.normal(0, 25, (size, size))
    return np.clip(image, 0, 255).astype(np.uint8)


def pil_reference(path, shortest=256, crop=224) -> np.ndarray:
    """Independent reference: PIL opens, converts to RGB, resizes bicubic, crops the center."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        w, h = image.size
        scale = shortest / min(w, h)
        size = (shortest, int(h * scale)) if w <= h else (int(w * scale), shortest)
        image = image.resize(size, Image.Resampling.BICUBIC)
        left, top = (size[0] - crop) // 2, (size[1] - crop) // 2
        return np.asarray(image.crop((left, top, left + crop, top + crop)))


@pytest.fixture(scope="module")
def nih_pngs(tmp_path_factory):
    root = tmp_path_factory.mktemp("png")
    paths = []
    for seed in range(2):
        path = root / f"0000000{seed}_000.png"
        Image.fromarray(chest_like(1024, seed), "L").save(path)
        paths.append(path)
    return paths


def test_grayscale_1024_png_equals_pil_resize_and_crop(nih_pngs):
    for path in nih_pngs:
        ours = preprocess(path)
        assert ours.shape == (224, 224, 1) and ours.dtype == np.uint8
        reference = pil_reference(path)
        np.testing.assert_array_equal(np.broadcast_to(ours, reference.shape), reference)


@pytest.mark.slow  # importing transformers alone takes seconds
def test_normalised_equals_hugging_face_resnet50_processor(nih_pngs):
    from transformers.models.convnext.image_processing_pil_convnext import (
        ConvNextImageProcessorPil,
    )

    # microsoft/resnet-50 preprocessor_config: shortest_edge 224, crop_pct 0.875, bicubic.
    processor = ConvNextImageProcessorPil(
        size={"shortest_edge": 224},
        crop_pct=0.875,
        resample=3,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    images = [Image.open(p).convert("RGB") for p in nih_pngs]
    hf = processor(images, return_tensors="np")["pixel_values"].transpose(0, 2, 3, 1)
    ours = np.asarray(normalize(np.stack([preprocess(p) for p in nih_pngs])))
    assert ours.shape == hf.shape == (2, 224, 224, 3)
    # One uint8 step is 1/255/0.225 = 0.0174 after normalisation: allow interpolation rounding.
    assert np.abs(ours - hf).max() < 0.018
    assert np.abs(ours - hf).mean() < 1e-3


def test_rgb_and_non_square_jpeg(tmp_path):
    rng = np.random.default_rng(3)
    rgb = np.stack([chest_like(300, k)[:, :260] for k in range(3)], axis=-1)
    rgb[..., 1] = rng.integers(0, 255, rgb.shape[:2])
    path = tmp_path / "a.png"
    Image.fromarray(rgb, "RGB").save(path)
    ours = preprocess(path)
    assert ours.shape == (224, 224, 3)
    np.testing.assert_array_equal(ours, pil_reference(path))
    jpeg = tmp_path / "b.jpg"
    Image.fromarray(chest_like(400, 4)[:300], "L").save(jpeg)
    np.testing.assert_array_equal(preprocess(jpeg)[..., 0], pil_reference(jpeg)[..., 0])


def test_16bit_grayscale_scales_to_8bit(tmp_path):
    image8 = chest_like(512, 5)
    path = tmp_path / "sixteen.png"
    Image.fromarray(image8.astype(np.uint16) * 257).save(path)  # 8-bit values spread to 16 bit
    with Image.open(path) as opened:
        assert "16" in opened.mode or opened.mode == "I"
    eight = tmp_path / "eight.png"
    Image.fromarray(image8, "L").save(eight)
    np.testing.assert_array_equal(preprocess(path), preprocess(eight))


def test_missing_image_names_the_file(tmp_path):
    with pytest.raises(BadImageError, match=r"nope.png: image file not found"):
        preprocess(tmp_path / "nope.png")


def test_truncated_png_names_the_file(tmp_path):
    path = tmp_path / "00000009_000.png"
    Image.fromarray(chest_like(256, 6), "L").save(path)
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(BadImageError, match=r"00000009_000.png: cannot decode image"):
        preprocess(path)


def test_corrupt_file_names_the_file(tmp_path):
    path = tmp_path / "garbage.jpg"
    path.write_bytes(b"\x00not an image at all" * 50)
    with pytest.raises(BadImageError, match=r"garbage.jpg: cannot decode image"):
        preprocess(path)
