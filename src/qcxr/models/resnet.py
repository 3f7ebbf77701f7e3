"""ResNet-50 v1.5 in Flax, laid out so that Hugging Face and torchvision weights import exactly.

v1.5 puts the stride-2 of each downsampling bottleneck on the 3x3 convolution (as torchvision and
microsoft/resnet-50 do), not on the first 1x1. Images are NHWC, already ImageNet-normalised; the
output is the global average pool, (B, 2048). BatchNorm keeps running statistics; `train=True`
normalises with batch statistics and updates them (apply with mutable=["batch_stats"]).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

STAGE_DEPTHS = (3, 4, 6, 3)  # ResNet-50
STAGE_WIDTHS = (64, 128, 256, 512)  # bottleneck width; output channels are 4x
EXPANSION = 4
STEM_WIDTH = 64
FEATURE_DIM = STAGE_WIDTHS[-1] * EXPANSION  # 2048

# PyTorch's BatchNorm2d: eps 1e-5 and running = 0.9 * running + 0.1 * batch (torch momentum 0.1).
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9

# torch's kaiming_normal_(mode="fan_out", nonlinearity="relu"), as HF and torchvision initialise.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(features: int, kernel: int, stride: int, name: str, dtype: Any) -> nn.Conv:
    # Explicit symmetric padding k // 2 as in PyTorch: "SAME" would pad (0, 1) for stride 2 on even
    # sizes and shift every feature map by a pixel relative to the imported weights.
    pad = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        kernel_init=conv_init,
        dtype=dtype,
        name=name,
    )


def _norm(train: bool, name: str, dtype: Any) -> nn.BatchNorm:
    # use_fast_variance=False: E[x^2] - E[x]^2 loses digits that torch's two-pass variance keeps.
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        use_fast_variance=False,
        dtype=dtype,
        name=name,
    )


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand, plus a projected shortcut if needed."""

    width: int
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        out_channels = self.width * EXPANSION
        y = _conv(self.width, 1, 1, "conv1", self.dtype)(x)
        y = nn.relu(_norm(train, "bn1", self.dtype)(y))
        y = _conv(self.width, 3, self.stride, "conv2", self.dtype)(y)
        y = nn.relu(_norm(train, "bn2", self.dtype)(y))
        y = _conv(out_channels, 1, 1, "conv3", self.dtype)(y)
        y = _norm(train, "bn3", self.dtype)(y)
        if x.shape[-1] != out_channels or self.stride != 1:
            x = _conv(out_channels, 1, self.stride, "proj_conv", self.dtype)(x)
            x = _norm(train, "proj_bn", self.dtype)(x)
        return nn.relu(y + x)


class ResNet50(nn.Module):
    """ResNet-50 trunk without classifier: (B, H, W, 3) normalised images -> (B, 2048) pooled."""

    depths: Sequence[int] = STAGE_DEPTHS
    widths: Sequence[int] = STAGE_WIDTHS
    dtype: Any = jnp.float32  # compute dtype; bfloat16 is a GPU option, parameters stay float32

    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        x = self.feature_map(images, train)
        # Pool in float32 so that bfloat16 compute still returns float32 features.
        return jnp.mean(x.astype(jnp.promote_types(x.dtype, jnp.float32)), axis=(1, 2))

    @nn.compact
    def feature_map(self, images: jax.Array, train: bool = False) -> jax.Array:
        """Stage 4's output before the global pool, (B, H/32, W/32, 2048): Grad-CAM's layer.

        The layers live here (the one compact method) under the same names as before, so the
        variables, the imported weights and `__call__`'s output are unchanged.
        """
        x = _conv(STEM_WIDTH, 7, 2, "stem_conv", self.dtype)(images)
        x = nn.relu(_norm(train, "stem_bn", self.dtype)(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage, (depth, width) in enumerate(zip(self.depths, self.widths, strict=True)):
            for block in range(depth):
                stride = 2 if stage > 0 and block == 0 else 1
                x = Bottleneck(width, stride, self.dtype, name=block_name(stage, block))(x, train)
        return x


def block_name(stage: int, block: int) -> str:
    """Flax name of bottleneck `block` of `stage` (both from 0); torchvision's layer{stage+1}.{block}."""
    return f"stage{stage + 1}_block{block}"


def resnet50(dtype: Any = jnp.float32) -> ResNet50:
    """The ResNet-50 v1.5 backbone module (pooled 2048-d output)."""
    return ResNet50(dtype=dtype)


@functools.cache
def variable_shapes() -> dict:
    """Shapes of {"params", "batch_stats"} without allocating or computing anything (do not edit)."""
    abstract = jax.eval_shape(
        lambda: resnet50().init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)), train=False)
    )
    return jax.tree_util.tree_map(lambda leaf: tuple(leaf.shape), dict(abstract))


def init_resnet50_variables(seed: int) -> dict:
    """Random (not ImageNet) weights, initialised as torch initialises ResNet; an explicit choice.

    Drawn with NumPy from the variable shapes: `module.init` would compile a random kernel for
    every distinct shape, about a minute on a small CPU, for weights that are thrown away.
    """
    rng = np.random.default_rng(seed)
    shapes = variable_shapes()

    def param(path: tuple, shape: tuple) -> jax.Array:
        name = path[-1].key
        if name == "kernel":  # HWIO; kaiming normal, fan_out = H * W * O
            std = np.sqrt(2.0 / (shape[0] * shape[1] * shape[3]))
            return jnp.asarray(rng.standard_normal(shape, dtype=np.float32) * np.float32(std))
        return jnp.ones(shape) if name in ("scale", "var") else jnp.zeros(shape)

    return {
        collection: jax.tree_util.tree_map_with_path(
            param, shapes[collection], is_leaf=lambda leaf: isinstance(leaf, tuple)
        )
        for collection in ("params", "batch_stats")
    }


def resnet50_param_count() -> int:
    """Trainable parameters (conv kernels, BatchNorm scale and bias); running statistics apart."""
    shapes = jax.tree_util.tree_leaves(
        variable_shapes()["params"], is_leaf=lambda leaf: isinstance(leaf, tuple)
    )
    return sum(math.prod(shape) for shape in shapes)
