"""The frozen-feature store: exact features, resumable extraction, augmented views, the CLI."""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qcxr.config import DataConfig
from qcxr.data.augment import augment
from qcxr.features import (
    FeatureStore,
    done_ids,
    extract_features,
    load_feature_store,
    partial_dir,
    save_feature_store,
    view_keys,
)


def reference_normalize(images: np.ndarray) -> np.ndarray:
    """ImageNet normalisation in NumPy, from the paper's statistics in DataConfig."""
    config = DataConfig()
    x = images.astype(np.float64) / 255.0
    x = np.broadcast_to(x, (*x.shape[:-1], 3))
    return ((x - np.array(config.mean)) / np.array(config.std)).astype(np.float32)


class TinyBackbone(nn.Module):
    """A stand-in with the backbone's interface, so the store logic is tested in milliseconds."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(8)(jnp.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2))], -1))


@pytest.fixture(scope="module")
def tiny():
    model = TinyBackbone()
    return model, model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))


def make_images(n: int, size: int = 16, channels: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def batches_of(ids, images, size, fail_after=None):
    for k, start in enumerate(range(0, len(ids), size)):
        if fail_after is not None and k == fail_after:
            raise KeyboardInterrupt("killed")
        yield ids[start : start + size], images[start : start + size]


IDS = [f"{i:08d}_000.png" for i in range(7)]


def test_features_are_the_backbone_on_normalised_images(tmp_path):
    from qcxr.models.resnet import init_resnet50_variables, resnet50

    variables = init_resnet50_variables(0)
    images = make_images(3, size=32)
    ids = IDS[:3]
    store = extract_features(
        batches_of(ids, images, 2), variables, tmp_path / "f.safetensors",
        weights="random(seed=0)", batch_size=2, progress=False,
    )  # fmt: skip
    expected = np.asarray(resnet50().apply(variables, jnp.asarray(reference_normalize(images))))
    assert store.features.shape == (3, 2048) and store.features.dtype == np.float32
    # jit against op-by-op, and a padded batch: float32 rounding only, at feature scale ~10.
    np.testing.assert_allclose(store.features, expected, atol=1e-4, rtol=1e-4)
    loaded = load_feature_store(tmp_path / "f.safetensors")
    assert loaded.ids == ids and loaded.weights == "random(seed=0)" and loaded.views == 0
    np.testing.assert_array_equal(loaded.features, store.features)
    assert not partial_dir(tmp_path / "f.safetensors").exists()


def test_store_metadata_is_plain_safetensors(tmp_path, tiny):
    """Other tools read the file with safetensors alone: ids are a JSON list in __metadata__."""
    from safetensors import safe_open

    model, variables = tiny
    out = tmp_path / "f.safetensors"
    extract_features(
        batches_of(IDS, make_images(7), 3), variables, out, weights="w@1", model=model,
        progress=False, meta={"split": "val"},
    )  # fmt: skip
    with safe_open(str(out), framework="numpy") as handle:
        meta = handle.metadata()
        assert handle.get_tensor("features").shape == (7, 8)
    assert json.loads(meta["ids"]) == IDS
    assert meta["weights"] == "w@1" and meta["split"] == "val" and meta["dtype"] == "float32"


def test_interrupted_extraction_resumes_to_the_same_store(tmp_path, tiny):
    model, variables = tiny
    images = make_images(7)
    whole = extract_features(
        batches_of(IDS, images, 2), variables, tmp_path / "whole.safetensors",
        weights="w", model=model, progress=False,
    )  # fmt: skip
    out = tmp_path / "resumed.safetensors"
    with pytest.raises(KeyboardInterrupt):
        extract_features(
            batches_of(IDS, images, 2, fail_after=3), variables, out,
            weights="w", model=model, chunk_rows=2, progress=False,
        )  # fmt: skip
    assert not out.exists()
    assert done_ids(out) == IDS[:6]  # three batches of two were written before the kill
    # The rerun may start anywhere before the first unfinished image; finished ones are skipped.
    resumed = extract_features(
        batches_of(IDS[4:], images[4:], 3), variables, out,
        weights="w", model=model, chunk_rows=2, progress=False,
    )  # fmt: skip
    assert resumed.ids == IDS
    np.testing.assert_allclose(resumed.features, whole.features, atol=1e-6)
    assert not partial_dir(out).exists()


def test_resuming_with_other_settings_is_refused(tmp_path, tiny):
    model, variables = tiny
    out = tmp_path / "f.safetensors"
    with pytest.raises(KeyboardInterrupt):
        extract_features(
            batches_of(IDS, make_images(7), 2, fail_after=1), variables, out,
            weights="a", model=model, chunk_rows=1, progress=False,
        )  # fmt: skip
    with pytest.raises(ValueError, match="weights: 'a' then, 'b' now"):
        extract_features(batches_of(IDS, make_images(7), 2), variables, out, weights="b")


def test_duplicate_ids_and_bad_images_are_errors(tmp_path, tiny):
    model, variables = tiny
    ids = IDS[:2] + IDS[:1]
    with pytest.raises(ValueError, match="more than once"):
        extract_features(
            batches_of(ids, make_images(3), 2), variables, tmp_path / "a.safetensors",
            weights="w", model=model, progress=False,
        )  # fmt: skip
    with pytest.raises(ValueError, match="uint8"):
        extract_features(
            [(IDS[:1], np.zeros((1, 16, 16, 1), np.float32))], variables,
            tmp_path / "b.safetensors", weights="w", model=model, progress=False,
        )  # fmt: skip


def noisy_view(images, key):
    """A stand-in augmentation whose output depends on the key, image by image."""
    x = jnp.asarray(images, jnp.float32) / 255.0
    x = jnp.broadcast_to(x, (*x.shape[:-1], 3))
    return x + jax.random.normal(key, x.shape)


def test_augmented_views_depend_on_seed_id_and_view_only(tmp_path, tiny):
    model, variables = tiny
    images = make_images(5, channels=3)
    ids = IDS[:5]

    def run(name, batch, seed=0):
        return extract_features(
            batches_of(ids, images, batch), variables, tmp_path / name, weights="w",
            views=2, seed=seed, batch_size=batch, augment_fn=noisy_view, model=model,
            progress=False,
        )  # fmt: skip

    by_two, by_five = run("a.safetensors", 2), run("b.safetensors", 5)
    assert by_two.features.shape == (5, 2, 8) and by_two.views == 2
    np.testing.assert_allclose(by_two.features, by_five.features, atol=1e-5)
    assert not np.allclose(by_two.features[:, 0], by_two.features[:, 1])
    assert not np.allclose(run("c.safetensors", 5, seed=1).features, by_five.features)


def test_views_use_the_data_augmentation_by_default(tmp_path, tiny):
    """qcxr.data.augment.augment (flip, rotation, normalisation) feeds the views, image by image
    with the documented keys view_keys(ids, view, seed); no view is the plain image."""
    model, variables = tiny
    ids, images = IDS[:2], make_images(2)
    store = extract_features(
        batches_of(ids, images, 2), variables, tmp_path / "f.safetensors",
        weights="w", views=3, seed=4, model=model, progress=False,
    )  # fmt: skip
    plain = extract_features(
        batches_of(ids, images, 2), variables, tmp_path / "plain.safetensors",
        weights="w", model=model, progress=False,
    )  # fmt: skip
    assert store.features.shape == (2, 3, 8)
    for k in range(3):
        keys = view_keys(ids, k, seed=4)
        for i in range(2):
            view = augment(images[i : i + 1], keys[i])
            expected = np.asarray(model.apply(variables, view))[0]
            np.testing.assert_allclose(store.features[i, k], expected, atol=1e-5, rtol=1e-5)
            assert not np.allclose(store.features[i, k], plain.features[i], atol=1e-3)
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert not np.allclose(store.features[:, a], store.features[:, b], atol=1e-3)


def test_malformed_store_is_an_error_naming_the_file(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "bad.safetensors"
    save_file({"features": np.zeros((3, 4), np.float32)}, str(path), metadata={"ids": '["a"]'})
    with pytest.raises(ValueError, match="bad.safetensors: 1 ids in metadata but 3"):
        load_feature_store(path)
    with pytest.raises(FileNotFoundError, match="qcxr features"):
        load_feature_store(tmp_path / "none.safetensors")
    with pytest.raises(ValueError, match="2 ids for 1"):
        save_feature_store(path, FeatureStore(["a", "b"], np.zeros((1, 4), np.float32)))


def test_cli_writes_every_image_of_a_split_and_warns_of_random_weights(tmp_path, capsys):
    from qcxr.cli import main
    from qcxr.data.datasets import NIHCXRLT
    from qcxr.data.synthetic import generate_study

    study = generate_study(
        tmp_path / "study", n_train=2, n_val=3, n_test=2, n_mimic=2, image_size=64,
        seed=0, progress=False,
    )  # fmt: skip
    out = tmp_path / "val.safetensors"
    argv = [
        "features", "--study", str(study.root), "--split", "val", "--cache",
        str(tmp_path / "cache"), "--weights", "random:1", "--out", str(out),
        "--batch-size", "2", "--no-progress", "--json",
    ]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "RANDOM BACKBONE WEIGHTS" in captured.err
    summary = json.loads(captured.out)
    assert summary["random_weights"] and summary["shape"] == [3, 2048]
    store = load_feature_store(out)
    assert store.ids == NIHCXRLT(study.nih_csv["val"], study.nih_images, "cxr8").ids
    assert store.weights == "random(seed=1)" and store.meta["split"] == "val"
    assert main(argv) == 0  # a finished store is reused, not recomputed
    assert json.loads(capsys.readouterr().out)["status"] == "up to date"


def test_extraction_stamps_a_content_checksum_that_every_load_checks(tmp_path, tiny):
    """features_sha256 covers ids and rows: rows shifted by one, or one row edited, after
    extraction make the store unreadable, naming the file and the field."""
    from qcxr.features import CHECKSUM, content_checksum

    model, variables = tiny
    out = tmp_path / "f.safetensors"
    store = extract_features(
        batches_of(IDS, make_images(7), 3), variables, out, weights="w", model=model,
        progress=False,
    )  # fmt: skip
    assert store.verified and store.meta[CHECKSUM] == content_checksum(IDS, store.features)
    assert load_feature_store(out).verified
    for edited in (np.roll(store.features, 1, axis=0), store.features + np.float32(1e-3)):
        save_feature_store(out, FeatureStore(IDS, edited, store.meta))
        with pytest.raises(ValueError, match=rf"f\.safetensors: field {CHECKSUM} does not match"):
            load_feature_store(out)
    assert content_checksum(IDS[::-1], store.features) != store.meta[CHECKSUM]
    # A store without the field (written before it was recorded) loads, as unverified.
    save_feature_store(out, FeatureStore(IDS, store.features, {"weights": "w"}))
    assert not load_feature_store(out).verified
