"""Augmentation: the rotation applied is the drawn angle in degrees (checked against scipy)."""

from __future__ import annotations

import jax
import numpy as np
from scipy import ndimage

from qcxr.data.augment import augment, augment_key, augment_params, normalize

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def pattern(size: int = 96) -> np.ndarray:
    """An asymmetric image: a bar and a blob, so flips and rotations are visible."""
    y, x = np.mgrid[0:size, 0:size]
    image = np.zeros((size, size), np.float32)
    image[20:30, 15:80] = 1.0
    image += np.exp(-((x - 65) ** 2 + (y - 60) ** 2) / 60.0)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)[..., None]


def denormalize(x: np.ndarray) -> np.ndarray:
    return (np.asarray(x) * STD + MEAN)[..., 0] * 255.0


def scipy_reference(image: np.ndarray, flip: bool, degrees: float) -> np.ndarray:
    plane = image[..., 0].astype(np.float32)
    plane = plane[:, ::-1] if flip else plane
    return ndimage.rotate(plane, degrees, reshape=False, order=1, mode="constant", cval=0.0)


def test_params_are_radians_within_15_degrees_and_flip_half():
    flip, angle = augment_params(jax.random.key(0), 4000)
    degrees = np.rad2deg(np.asarray(angle))
    assert angle.dtype == np.float32 and np.abs(degrees).max() <= 15.0 + 1e-4
    assert degrees.min() < -14 and degrees.max() > 14  # uniform over the whole +-15 range
    assert abs(float(np.asarray(flip).mean()) - 0.5) < 0.03


def test_applied_rotation_is_the_drawn_angle_in_degrees():
    images = np.stack([pattern()] * 6)
    key = augment_key(seed=0, epoch=1, position=2)
    flips, angles = (np.asarray(v) for v in augment_params(key, 6))
    out = np.asarray(augment(images, key))
    assert out.shape == (6, 96, 96, 3) and out.dtype == np.float32
    inner = (slice(12, 84), slice(12, 84))
    for k in range(6):
        got = denormalize(out[k])
        degrees = float(np.rad2deg(angles[k]))
        err = np.abs(got - scipy_reference(images[k], flips[k], degrees))[inner].mean()
        assert err < 1.0, (k, degrees, err)
        # Recover the angle independently: the best-matching scipy rotation on a 0.5-degree grid.
        grid = np.arange(-20, 20.01, 0.5)
        errors = [np.abs(got - scipy_reference(images[k], flips[k], g))[inner].mean() for g in grid]
        assert abs(grid[int(np.argmin(errors))] - degrees) <= 0.5


def test_flip_only_and_normalisation():
    images = np.stack([pattern(), pattern()[::-1]])
    out = np.asarray(augment(images, jax.random.key(1), hflip_prob=1.0, degrees=0.0))
    expected = (images[:, :, ::-1].astype(np.float32) / 255.0 - MEAN) / STD
    np.testing.assert_allclose(out, expected, atol=1e-5)
    rgb = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    np.testing.assert_allclose(np.asarray(normalize(rgb)), (rgb / 255.0 - MEAN) / STD, atol=1e-5)


def test_augment_key_is_fixed_by_seed_epoch_position():
    a = augment_params(augment_key(3, 2, 10), 64)[1]
    np.testing.assert_array_equal(a, augment_params(augment_key(3, 2, 10), 64)[1])
    assert not np.array_equal(a, augment_params(augment_key(3, 2, 11), 64)[1])
    assert not np.array_equal(a, augment_params(augment_key(3, 3, 10), 64)[1])
    assert not np.array_equal(a, augment_params(augment_key(4, 2, 10), 64)[1])
