"""The dotted-key helpers of qcxr.config and its one "may this be resumed?" check."""

from __future__ import annotations

import pytest

from qcxr import config as config_lib


def test_nested_and_merge_build_overrides():
    assert config_lib.nested("train.learning_rate", 0.1) == {"train": {"learning_rate": 0.1}}
    assert config_lib.nested("task", "cxr14") == {"task": "cxr14"}
    base = {"train": {"learning_rate": 1e-4, "loss": "bce"}, "task": "cxr8"}
    merged = config_lib.merge(base, config_lib.nested("train.loss", "focal"))
    assert merged == {"train": {"learning_rate": 1e-4, "loss": "focal"}, "task": "cxr8"}
    assert base["train"]["loss"] == "bce"  # the base is not changed
    assert config_lib.merge({"a": {"b": 1}}, {"a": 2}) == {"a": 2}  # a value replaces a mapping


def test_flat_and_changed_settings():
    assert config_lib.flat({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}
    old = config_lib.to_dict(config_lib.Config())
    new = config_lib.to_dict(
        config_lib.from_dict({"train": {"max_epochs": 9, "learning_rate": 3e-3}})
    )
    changes = config_lib.changed_settings(old, new)
    assert changes == {"train.learning_rate": (1e-4, 3e-3), "train.max_epochs": (50, 9)}
    assert config_lib.changed_settings(old, new, {"train.max_epochs"}) == {
        "train.learning_rate": (1e-4, 3e-3)
    }
    assert config_lib.changed_settings({"x": 1}, {"y": 1}) == {"x": (1, None), "y": (None, 1)}
    text = config_lib.describe_changes({"seed": (1, 2)})
    assert text == "seed: 1 then, 2 now"


@pytest.mark.parametrize(
    "key, values",
    [("model.head", config_lib.HEADS), ("train.mode", config_lib.MODES),
     ("model.backbone", config_lib.BACKBONES), ("data.source", config_lib.SOURCES),
     ("train.vmap_seeds", config_lib.VMAP_SEEDS), ("model.entangler", config_lib.ENTANGLERS),
     ("model.backend", config_lib.BACKENDS), ("train.loss", config_lib.LOSSES),
     ("train.schedule", config_lib.SCHEDULES), ("train.optimizer", config_lib.OPTIMIZERS),
     ("data.resample", config_lib.RESAMPLES)],
)  # fmt: skip
def test_choice_constants_hold_the_defaults(key, values):
    section, name = key.split(".")
    assert getattr(getattr(config_lib.Config(), section), name) in values
