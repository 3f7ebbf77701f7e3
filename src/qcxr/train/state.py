"""The train state (one explicit pytree) and the optimizer built from the config.

TrainState holds everything a step changes: params, BatchNorm batch_stats (empty for heads on
frozen features), the Optax state, the step counter and an RNG key reserved for stochastic layers.
Data order and augmentation keys are NOT in the state: they are pure functions of (seed, epoch,
batch position), which is what makes CDL and DQC with the same seed see the same batches and a
resumed run see the batches it would have seen.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from qcxr.config import OPTIMIZERS, SCHEDULES, TrainConfig

# Purposes of the root seed; each gets its own stream (jax.random.fold_in(root, purpose)).
INIT, DROPOUT = 0, 3  # 1 (data order) and 2 (augmentation) live in qcxr.data.loader


@flax.struct.dataclass
class TrainState:
    params: Any
    batch_stats: Any
    opt_state: Any
    step: jax.Array
    rng: jax.Array  # raw key data (uint32), so checkpoints hold plain arrays


def purpose_key(seed: int, purpose: int) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), purpose)


def learning_rate(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """Constant by default (Sec. III-F names no schedule); cosine variants decay over max_epochs."""
    total = max(1, config.max_epochs * steps_per_epoch)
    if config.schedule == "constant":
        return optax.constant_schedule(config.learning_rate)
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(config.learning_rate, total)
    if config.schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, config.learning_rate, max(1, config.warmup_steps), total
        )
    raise ValueError(f"train.schedule: unknown schedule {config.schedule!r}; choose {SCHEDULES}")


def optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """Adam (Sec. III-F) or an alternative, with the configured learning-rate schedule."""
    schedule = learning_rate(config, steps_per_epoch)
    if config.optimizer == "adam":
        return optax.adam(schedule)
    if config.optimizer == "adamw":
        return optax.adamw(schedule)
    if config.optimizer == "sgd":
        return optax.sgd(schedule, momentum=0.9)
    raise ValueError(
        f"train.optimizer: unknown optimizer {config.optimizer!r}; choose {OPTIMIZERS}"
    )


def create_state(
    variables: dict[str, Any], tx: optax.GradientTransformation, seed: int
) -> TrainState:
    """A fresh state from model variables {"params": ..., "batch_stats": ... (optional)}."""
    params = variables["params"]
    return TrainState(
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        step=jnp.zeros((), jnp.int32),
        rng=jax.random.key_data(purpose_key(seed, DROPOUT)),
    )


def variables_of(state: TrainState) -> dict[str, Any]:
    """Model variables (what inference needs) from a state."""
    if state.batch_stats:
        return {"params": state.params, "batch_stats": state.batch_stats}
    return {"params": state.params}
