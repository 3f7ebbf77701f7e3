"""The trained model: a head on pooled features (frozen mode) or backbone + head (finetune mode).

Variables keep backbone and head apart, so pretrained backbone weights drop in unchanged and a
head trained on frozen features has the same layout as the head of a finetuned model:
  frozen:   {"params": {"head": ...}}
  finetune: {"params": {"backbone": ..., "head": ...}, "batch_stats": {"backbone": ...}}
`Model` bundles the pure apply functions the train and eval steps are built from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from qcxr.config import BACKBONES, MODES, Config, task_of
from qcxr.models.heads import make_head
from qcxr.quantum.cost import resolve_backend
from qcxr.train.state import INIT, purpose_key


class TinyBackbone(nn.Module):
    """A small patch-MLP with BatchNorm for tests on CPU; same call signature as resnet50().

    8x8 patches -> Dense -> BatchNorm -> ReLU, twice, then the global mean: no convolutions,
    because XLA's CPU compiler takes seconds per convolution shape. A Dense on non-overlapping
    patches is a convolution with kernel = stride = 8, and the second a 1x1 convolution, so
    `feature_map` (before the mean) is its last convolutional block for Grad-CAM.
    """

    features: int = 64
    patch: int = 8

    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        return jnp.mean(self.feature_map(images, train), axis=(1, 2))

    @nn.compact
    def feature_map(self, images: jax.Array, train: bool = False) -> jax.Array:
        """(B, H/8, W/8, features) before the global mean; the same variables as `__call__`."""
        b, h, w, c = images.shape
        p = self.patch
        x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
        x = x.reshape(b, h // p, w // p, p * p * c)
        for width in (32, self.features):
            x = nn.Dense(width, use_bias=False)(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
            x = nn.relu(x)
        return x


def resolved_backend(config: Config) -> str | None:
    """What model.backend means for this run (None: a CDL head has no circuit)."""
    if config.model.head != "dqc":
        return None
    m = config.model
    return resolve_backend(m.backend, len(task_of(config)), m.num_layers, m.entangler)


def head_module(config: Config) -> nn.Module:
    """The configured head for the task (qcxr.models.heads.make_head), its backend resolved."""
    m = config.model
    return make_head(
        m.head,
        len(task_of(config)),
        num_layers=m.num_layers,
        entangler=m.entangler,
        backend=resolved_backend(config) or m.backend,
    )


def backbone_module(config: Config) -> nn.Module:
    if config.model.backbone == "resnet50":
        from qcxr.models.resnet import resnet50

        return resnet50()
    if config.model.backbone == "tiny":
        return TinyBackbone()
    raise ValueError(
        f"model.backbone: unknown backbone {config.model.backbone!r}; choose from {BACKBONES}"
    )


def backbone_variables(config: Config, seed: int) -> tuple[dict[str, Any], str]:
    """Initial backbone variables and their identity (what was loaded, or which random init)."""
    if config.model.backbone == "tiny":
        # Parameter shapes do not depend on the image size; a small input compiles much faster.
        init = jax.jit(lambda key: TinyBackbone().init(key, jnp.zeros((1, 32, 32, 3))))
        return dict(init(purpose_key(seed, INIT))), f"tiny-random(seed={seed})"
    from qcxr.models.weights import resolve_resnet50_weights

    return resolve_resnet50_weights(config.model.weights)


def init_head(config: Config, seed: int, feature_dim: int) -> dict[str, Any]:
    """Head params from the run's init stream (LeCun normal dense, uniform [0, 2pi) circuit)."""
    head = head_module(config)
    key = jax.random.fold_in(purpose_key(seed, INIT), 1)
    return dict(head.init(key, jnp.zeros((1, feature_dim), jnp.float32)))["params"]


@dataclass(frozen=True)
class Model:
    """Pure functions of (variables, inputs); `inputs` are features or uint8 images."""

    # (params, batch_stats, inputs, key) -> (logits, new batch_stats); key drives augmentation
    train_logits: Callable[..., tuple[jax.Array, Any]]
    # (variables, inputs) -> logits, inference mode (BatchNorm running averages)
    logits: Callable[[dict[str, Any], jax.Array], jax.Array]
    mode: str


def frozen_model(config: Config) -> Model:
    head = head_module(config)

    def logits(variables: dict[str, Any], features: jax.Array) -> jax.Array:
        return head.apply({"params": variables["params"]["head"]}, features)

    def train_logits(params: Any, batch_stats: Any, features: jax.Array, key: jax.Array):
        del key  # features were augmented (if at all) when they were extracted
        return head.apply({"params": params["head"]}, features), batch_stats

    return Model(train_logits, logits, "frozen")


def finetune_model(config: Config) -> Model:
    from qcxr.data.augment import augment, normalize

    head, backbone = head_module(config), backbone_module(config)
    flip, degrees = config.data.hflip_prob, config.data.rotate_degrees

    def augmented(images: jax.Array, key: jax.Array) -> jax.Array:
        return augment(images, key, hflip_prob=flip, degrees=degrees)

    def logits(variables: dict[str, Any], images: jax.Array) -> jax.Array:
        backbone_vars = {
            "params": variables["params"]["backbone"],
            "batch_stats": variables["batch_stats"]["backbone"],
        }
        features = backbone.apply(backbone_vars, normalize(images), train=False)
        return head.apply({"params": variables["params"]["head"]}, features)

    def train_logits(params: Any, batch_stats: Any, images: jax.Array, key: jax.Array):
        backbone_vars = {"params": params["backbone"], "batch_stats": batch_stats["backbone"]}
        features, updates = backbone.apply(
            backbone_vars, augmented(images, key), train=True, mutable=["batch_stats"]
        )
        out = head.apply({"params": params["head"]}, features)
        return out, {"backbone": updates["batch_stats"]}

    return Model(train_logits, logits, "finetune")


def build_model(config: Config) -> Model:
    if config.train.mode == "frozen":
        return frozen_model(config)
    if config.train.mode == "finetune":
        return finetune_model(config)
    raise ValueError(f"train.mode: unknown mode {config.train.mode!r}; choose from {MODES}")


def init_variables(
    config: Config, seed: int, feature_dim: int | None = None
) -> tuple[dict[str, Any], str]:
    """Initial variables for the configured mode and the backbone weights' identity."""
    if config.train.mode == "frozen":
        if feature_dim is None:
            raise ValueError("frozen mode needs the feature dimension of the feature store")
        return {"params": {"head": init_head(config, seed, feature_dim)}}, ""
    backbone, identity = backbone_variables(config, seed)
    dim = jax.eval_shape(
        lambda v: backbone_module(config).apply(v, jnp.zeros((1, 224, 224, 3)), train=False),
        backbone,
    ).shape[-1]
    variables = {
        "params": {"backbone": backbone["params"], "head": init_head(config, seed, dim)},
        "batch_stats": {"backbone": backbone["batch_stats"]},
    }
    return variables, identity
