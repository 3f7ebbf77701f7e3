"""On-device augmentation with dm-pix, jitted over the batch, and ImageNet normalisation.

Horizontal flip with p = 0.5 and rotation uniform in +-15 degrees (Sec. III-F). dm-pix's
`rotate` takes RADIANS: the seed's code passed -15..15 to it, i.e. up to +-860 degrees; here the
degrees are converted. Geometry runs on the cached channels (one for grayscale), and the
broadcast to RGB happens in the normalisation, three times cheaper for NIH's grayscale images.
"""

from __future__ import annotations

from functools import partial

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

from qcxr.config import DataConfig

_DEFAULTS = DataConfig()
AUGMENT_STREAM = 0xA6  # separates the augmentation stream from other uses of the run seed


def augment_key(seed: int, epoch: int, position: int) -> jax.Array:
    """The augmentation key of batch `position` of `epoch` for a run seed (same for every head)."""
    key = jax.random.fold_in(jax.random.key(seed), AUGMENT_STREAM)
    return jax.random.fold_in(jax.random.fold_in(key, epoch), position)


def augment_params(
    key: jax.Array,
    batch_size: int,
    hflip_prob: float = _DEFAULTS.hflip_prob,
    degrees: float = _DEFAULTS.rotate_degrees,
) -> tuple[jax.Array, jax.Array]:
    """(flip bool (B,), angle float32 radians (B,)) with angle uniform in +-degrees."""
    flip_key, angle_key = jax.random.split(key)
    flip = jax.random.bernoulli(flip_key, hflip_prob, (batch_size,))
    angle = jax.random.uniform(angle_key, (batch_size,), jnp.float32, -degrees, degrees)
    return flip, jnp.deg2rad(angle)


def normalize_float(images: jax.Array) -> jax.Array:
    """ImageNet normalisation of float images in [0, 1], (B, H, W, C) -> (B, H, W, 3)."""
    mean = jnp.asarray(_DEFAULTS.mean, jnp.float32)
    std = jnp.asarray(_DEFAULTS.std, jnp.float32)
    images = jnp.broadcast_to(images, (*images.shape[:-1], 3))
    return (images - mean) / std


@jax.jit
def normalize(images_uint8: jax.Array | np.ndarray) -> jax.Array:
    """uint8 (B, H, W, C) -> float32 (B, H, W, 3) ImageNet-normalised; C = 1 is broadcast."""
    return normalize_float(jnp.asarray(images_uint8, jnp.float32) / 255.0)


def flip_rotate(images: jax.Array, flip: jax.Array, angle: jax.Array) -> jax.Array:
    """Flip (B,) then rotate by angle (B,) radians counter-clockwise; black fill, bilinear."""
    images = jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)
    rotate = partial(dm_pix.rotate, order=1, mode="constant", cval=0.0)
    return jax.vmap(rotate)(images, angle)


@partial(jax.jit, static_argnames=("hflip_prob", "degrees"))
def augment(
    images_uint8: jax.Array | np.ndarray,
    key: jax.Array,
    hflip_prob: float = _DEFAULTS.hflip_prob,
    degrees: float = _DEFAULTS.rotate_degrees,
) -> jax.Array:
    """uint8 (B, H, W, C) -> augmented, normalised float32 (B, H, W, 3)."""
    images = jnp.asarray(images_uint8, jnp.float32) / 255.0
    flip, angle = augment_params(key, images.shape[0], hflip_prob, degrees)
    return normalize_float(flip_rotate(images, flip, angle))
