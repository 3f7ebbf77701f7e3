"""`pennylane-tf`: Keras model (keras.applications.ResNet50, random weights) whose DQC runs the
PennyLane QNode with the TensorFlow interface, in a `tf.function` step compiled with XLA
(`jit_compile=True`; the paper JIT-compiled every model but the torch one, Sec. III-E).
Option `tf_mode="graph"` keeps the graph without XLA."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

from qcxr.bench.frameworks import (
    FEATURES,
    IMAGE_SHAPE,
    LEARNING_RATE,
    NUM_LAYERS,
    check_cell,
)

VERSIONS = ("pennylane", "tensorflow", "keras", "numpy")
TF_MODES = ("xla", "graph")


def _quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    return tf


def _head_layers(head: str, num_labels: int):
    tf = _quiet_tensorflow()
    dense = dict(kernel_initializer="lecun_normal", bias_initializer="zeros")
    pre = tf.keras.layers.Dense(num_labels, **dense)
    pre.build((None, FEATURES))
    if head == "cdl":
        return pre, None, None, None
    from qcxr.bench.frameworks.circuit import dqc_qnode

    circuit = dqc_qnode(num_labels, interface="tf")
    angles = tf.random.uniform((NUM_LAYERS, num_labels), 0.0, 2 * math.pi, dtype=tf.float32)
    weights = tf.Variable(angles, name="circuit_weights")
    post = tf.keras.layers.Dense(num_labels, **dense)
    post.build((None, num_labels))
    return pre, circuit, weights, post


def build_step(
    head: str,
    num_labels: int,
    batch: int,
    backbone: str,
    seed: int = 0,
    tf_mode: str = "xla",
    **options: Any,
) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
    """(step, sync) of one training step of the CDL or DQC model."""
    check_cell(head, num_labels, batch, backbone)
    if tf_mode not in TF_MODES:
        raise ValueError(f"tf_mode {tf_mode!r}: expected one of {TF_MODES}")
    tf = _quiet_tensorflow()
    tf.random.set_seed(seed)
    with_backbone = backbone == "resnet50"
    trunk = None
    if with_backbone:
        trunk = tf.keras.applications.ResNet50(
            weights=None, include_top=False, pooling="avg", input_shape=IMAGE_SHAPE
        )
    pre, circuit, weights, post = _head_layers(head, num_labels)

    # Autograph would rewrite PennyLane's Python internals (slow, and warns); trace it as is.
    @tf.autograph.experimental.do_not_convert
    def expvals(x):
        return tf.cast(tf.stack(circuit(x, weights), axis=-1), tf.float32)

    def logits_of(inputs):
        x = trunk(inputs, training=True) if with_backbone else inputs
        x = pre(x)
        if circuit is None:
            return x
        return post(expvals(tf.tanh(x) * (math.pi / 2)))

    variables = list(pre.trainable_variables)
    if circuit is not None:
        variables += [weights, *post.trainable_variables]
    if with_backbone:
        variables = list(trunk.trainable_variables) + variables
    optimizer = tf.keras.optimizers.Adam(learning_rate=LEARNING_RATE)
    optimizer.build(variables)
    shape = (batch, *IMAGE_SHAPE) if with_backbone else (batch, FEATURES)
    inputs = tf.zeros(shape, tf.float32)
    labels = tf.zeros((batch, num_labels), tf.float32)

    @tf.function(jit_compile=tf_mode == "xla")
    def train_step():
        with tf.GradientTape() as tape:
            logits = logits_of(inputs)
            loss = tf.reduce_mean(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
            )
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    return train_step, lambda loss: loss.numpy()


def device() -> str:
    tf = _quiet_tensorflow()
    gpus = tf.config.list_physical_devices("GPU")
    return f"tensorflow gpu: {gpus[0].name}" if gpus else "tensorflow cpu"
