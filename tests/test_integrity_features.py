"""Feature stores tied to their split and their extraction (issue 13, item 3): each fault of the
fault trial injected into a store, and the error that names the store, the label file and what
to do. The stores carry the provenance `qcxr features` writes; no backbone runs here except in
the last test (the command itself, on two tiny images)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qcxr import config as config_lib
from qcxr.config import DataConfig
from qcxr.data.datasets import file_checksum, study_paths
from qcxr.features import CHECKSUM, FeatureStore, load_feature_store, save_feature_store, stamped
from qcxr.labels import TASKS
from qcxr.train.data import load_frozen_data

NAMES = TASKS["cxr8"]
SIZES = {"train": 24, "val": 12, "test": 60}
N_MIMIC = 10
DIM = 4


def write_study(root: Path) -> Path:
    """NIH train/val/test label files and a MIMIC test file (no images: stores are given)."""
    paths = study_paths(root)
    paths.nih_dir.mkdir(parents=True)
    paths.mimic_root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in SIZES.items():
        frame = pd.DataFrame(rng.integers(0, 2, (n, len(NAMES))), columns=NAMES)
        frame.insert(0, "id", [f"{split}{i:04d}.png" for i in range(n)])
        frame.to_csv(paths.nih_csv[split], index=False)
    frame = pd.DataFrame(rng.integers(0, 2, (N_MIMIC, len(NAMES))), columns=NAMES)
    frame.insert(0, "dicom_id", [f"d{i:03d}" for i in range(N_MIMIC)])
    frame["path"] = [f"files/p10/s1/d{i:03d}.jpg" for i in range(N_MIMIC)]
    frame.to_csv(paths.mimic_csv, index=False)
    return root


def label_file(study: Path, split: str) -> Path:
    paths = study_paths(study)
    return paths.mimic_csv if split == "mimic" else paths.nih_csv[split]


def split_ids(study: Path, split: str) -> list[str]:
    frame = pd.read_csv(label_file(study, split), dtype=str)
    return frame["dicom_id" if split == "mimic" else "id"].tolist()


def provenance(study: Path, split: str, weights: str = "w@1") -> dict[str, str]:
    """The metadata `qcxr features` writes (features_cli.provenance, store_settings)."""
    data = DataConfig()
    csv = label_file(study, split)
    return {
        "split": split, "labels_checksum": file_checksum(csv), "label_file": str(csv),
        "cache": "/somewhere/cache", "crop": str(data.crop),
        "resize_shortest": str(data.resize_shortest), "resample": data.resample,
        "weights": weights, "views": "0", "seed": "none", "dtype": "float32",
    }  # fmt: skip


def write_store(features: Path, study: Path, split: str, **meta: str) -> FeatureStore:
    ids = split_ids(study, split)
    x = np.random.default_rng(len(ids)).normal(size=(len(ids), DIM)).astype(np.float32)
    store = stamped(FeatureStore(ids, x, {**provenance(study, split), **meta}))
    save_feature_store(features / f"{split}.safetensors", store)
    return store


@pytest.fixture
def setup(tmp_path):
    """(study, features dir): a study and a sound store for every split."""
    study = write_study(tmp_path / "study")
    features = tmp_path / "features"
    for split in ("train", "val", "test", "mimic"):
        write_store(features, study, split)
    return study, features


def frozen_config(study: Path, features: Path, **data):
    return config_lib.from_dict(
        {
            "data": {"study": str(study), "features": str(features), "source": "nih", **data},
            "train": {"mode": "frozen"},
        }
    )


def load_error(study: Path, features: Path, **kwargs) -> str:
    with pytest.raises(ValueError) as err:
        load_frozen_data(frozen_config(study, features), **kwargs)
    return str(err.value)


def rewrite(path: Path, ids: list[str], x: np.ndarray, *, restamp: bool) -> None:
    """Write `ids` and `x` into a store, its metadata kept (restamp: a consistent checksum, as
    if extraction had made these rows; else the old checksum, as a tool editing the rows)."""
    old = load_feature_store(path)
    store = FeatureStore(ids, x, dict(old.meta))
    save_feature_store(path, stamped(store) if restamp else store)


def test_sound_stores_load_checked_and_quietly(setup, capsys):
    study, features = setup
    data = load_frozen_data(frozen_config(study, features))
    assert set(data.tests) == {"nih", "mimic"} and len(data.tests["nih"].ids) == SIZES["test"]
    assert data.weights == "w@1"
    assert "warning" not in capsys.readouterr().err


def test_rows_shifted_by_one_are_found_by_the_checksum(setup):
    study, features = setup
    path = features / "test.safetensors"
    store = load_feature_store(path)
    rewrite(path, store.ids, np.roll(store.features, 1, axis=0), restamp=False)
    message = load_error(study, features)
    assert message.startswith(f"{path}: field {CHECKSUM} does not match")
    assert "shifted" in message and "qcxr features --split test" in message


def test_a_duplicated_id_is_named_with_its_rows(setup):
    study, features = setup
    path = features / "test.safetensors"
    store = load_feature_store(path)
    ids = list(store.ids)
    ids[5] = ids[4]
    rewrite(path, ids, store.features, restamp=True)
    message = load_error(study, features)
    csv = label_file(study, "test")
    assert message.startswith(f"{path}: the store's ids are not those of its label file")
    assert f"1 id(s) on more than one row: {ids[4]!r} (rows [4, 5])" in message
    assert f"1 of the 60 images of {csv} have no feature row, e.g. ['test0005.png']" in message
    assert "qcxr features" in message and "--overwrite" in message


def test_dropped_rows_are_counted_and_named(setup):
    study, features = setup
    path = features / "test.safetensors"
    store = load_feature_store(path)
    rewrite(path, store.ids[:50], store.features[:50], restamp=True)
    message = load_error(study, features)
    csv = label_file(study, "test")
    assert f"{path}: " in message
    assert f"10 of the 60 images of {csv} have no feature row" in message
    assert "'test0050.png', 'test0051.png', 'test0052.png', ..." in message


def test_an_extra_id_is_named(setup):
    study, features = setup
    path = features / "val.safetensors"
    store = load_feature_store(path)
    ids = [*store.ids, "ghost.png"]
    rewrite(path, ids, np.concatenate([store.features, store.features[:1]]), restamp=True)
    message = load_error(study, features)
    csv = label_file(study, "val")
    assert message.startswith(f"{path}: ")
    assert f"1 feature row id(s) not in {csv}, e.g. ['ghost.png']" in message


def test_a_missing_external_store_is_an_error_unless_asked_for(setup, capsys):
    study, features = setup
    (features / "mimic.safetensors").unlink()
    message = load_error(study, features)
    assert message.startswith(f"{features / 'mimic.safetensors'}: no feature store for the ")
    assert f"external test set 'mimic' ({study_paths(study).mimic_csv} exists)" in message
    assert "--split mimic" in message and "train.require_external_test: false" in message
    data = load_frozen_data(frozen_config(study, features), require_external_test=False)
    assert set(data.tests) == {"nih"}
    assert "no mimic (external) test set" in capsys.readouterr().err
    # The internal test store is never optional.
    (features / "test.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"test\.safetensors: no feature store here"):
        load_frozen_data(frozen_config(study, features), require_external_test=False)


def test_a_label_file_changed_after_extraction_is_named(setup):
    study, features = setup
    csv = label_file(study, "val")
    frame = pd.read_csv(csv)
    frame.loc[3, "Mass"] = 1 - frame.loc[3, "Mass"]  # same images, one label corrected
    frame.to_csv(csv, index=False)
    message = load_error(study, features)
    assert message.startswith(f"{features / 'val.safetensors'}: field labels_checksum ")
    assert f"of {csv}: labels changed since extraction" in message
    assert "qcxr features --split val" in message


def test_image_settings_must_be_the_configs(setup):
    study, features = setup
    with pytest.raises(ValueError) as err:
        load_frozen_data(frozen_config(study, features, crop=32, resize_shortest=37))
    message = str(err.value)
    assert message.startswith(f"{features / 'train.safetensors'}: the store's images were")
    assert "crop 224 in the store, data.crop = 32" in message
    assert "resize_shortest 256 in the store, data.resize_shortest = 37" in message


def test_stores_from_other_weights_are_named(setup):
    study, features = setup
    write_store(features, study, "test", weights="other@2")
    message = load_error(study, features)
    assert "different backbone weights" in message
    assert "train.safetensors: 'w@1'" in message and "test.safetensors: 'other@2'" in message


def test_a_store_of_another_split_is_named(setup):
    study, features = setup
    shutil.copy(features / "val.safetensors", features / "test.safetensors")
    message = load_error(study, features)
    assert message.startswith(f"{features / 'test.safetensors'}: field split is 'val'")


def test_stores_without_provenance_load_with_one_warning(setup, capsys):
    """Stores written before provenance was recorded (ids and weights only) still load."""
    from safetensors.numpy import save_file

    study, features = setup
    for split in ("train", "val", "test", "mimic"):
        store = load_feature_store(features / f"{split}.safetensors")
        meta = {"ids": json.dumps(store.ids), "weights": "w@1"}
        save_file({"features": store.features}, str(features / f"{split}.safetensors"), meta)
    data = load_frozen_data(frozen_config(study, features))
    assert set(data.tests) == {"nih", "mimic"}
    lines = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(lines) == 1 and "unverified" in lines[0]
    assert "train.safetensors, val.safetensors, test.safetensors, mimic.safetensors" in lines[0]
    # The ids are checked all the same.
    path = features / "test.safetensors"
    store = load_feature_store(path)
    meta = {"ids": json.dumps(store.ids[:-1]), "weights": "w@1"}
    save_file({"features": store.features[:-1]}, str(path), meta)
    assert "1 of the 60 images" in load_error(study, features)


def test_features_command_records_provenance_and_restamps_changed_labels(
    tmp_path, capsys, monkeypatch
):
    """`qcxr features` writes the provenance load_frozen_data checks; after a label change that
    keeps the images, rerunning it updates labels_checksum instead of recomputing. (A tiny
    stand-in backbone: the store logic is what is tested, in a second.)"""
    import jax
    import jax.numpy as jnp

    from qcxr import features
    from qcxr.cli import main
    from qcxr.data.cache import ImageCache
    from qcxr.data.synthetic import generate_study
    from qcxr.models import weights
    from test_features import TinyBackbone

    tiny = TinyBackbone()
    variables = tiny.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    monkeypatch.setattr(features, "_backbone", lambda dtype: tiny)
    monkeypatch.setattr(weights, "resolve_resnet50_weights", lambda w: (variables, "tiny@1"))

    study = generate_study(
        tmp_path / "study", n_train=2, n_val=2, n_test=2, n_mimic=2, image_size=40,
        seed=0, progress=False,
    )  # fmt: skip
    ImageCache(tmp_path / "cache", crop=32, resize_shortest=37).close()
    out = tmp_path / "val.safetensors"
    argv = [
        "features", "--study", str(study.root), "--split", "val", "--cache",
        str(tmp_path / "cache"), "--weights", "tiny", "--out", str(out),
        "--no-progress", "--json",
    ]  # fmt: skip
    assert main(argv) == 0
    store = load_feature_store(out)
    csv = study.nih_csv["val"]
    assert store.verified and store.meta["labels_checksum"] == file_checksum(csv)
    assert store.meta["label_file"] == str(csv) and store.meta["split"] == "val"
    assert (store.meta["crop"], store.meta["resize_shortest"]) == ("32", "37")
    assert store.meta["resample"] == "bicubic"
    assert store.meta["cache"] == str((tmp_path / "cache").resolve())
    capsys.readouterr()

    frame = pd.read_csv(csv)
    frame.loc[0, "Mass"] = 1 - frame.loc[0, "Mass"]
    frame.to_csv(csv, index=False)
    assert main(argv) == 0
    assert "labels_checksum updated" in json.loads(capsys.readouterr().out)["status"]
    again = load_feature_store(out)
    assert again.meta["labels_checksum"] == file_checksum(csv)
    np.testing.assert_array_equal(again.features, store.features)

    # A store whose rows were edited is refused by the command too, naming the file.
    save_feature_store(out, FeatureStore(store.ids, store.features + 1, store.meta))
    assert main(argv) == 1
    assert re.search(rf"{re.escape(str(out))}: field {CHECKSUM}", capsys.readouterr().err)
