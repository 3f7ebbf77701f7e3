"""A bad image skipped at `qcxr cache build --on-bad-image skip` is left out of the features and
of training, with a note each time; nothing fails on it later and nothing is dropped silently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qcxr.cli import main
from qcxr.data.cache import ImageCache
from qcxr.data.synthetic import generate_study
from qcxr.features import load_feature_store, partial_dir


def broken_study(root: Path):
    study = generate_study(
        root, n_train=12, n_val=6, n_test=6, n_mimic=4, image_size=40, seed=0, progress=False
    )
    images = sorted(study.nih_images.glob("*.png"))
    victim = next(p for p in images if p.name in study.nih_csv["train"].read_text())
    victim.write_bytes(victim.read_bytes()[:60])  # a truncated PNG
    return study, victim


def test_a_skipped_image_is_left_out_of_features_and_training(tmp_path, capsys, tiny_features):
    study, victim = broken_study(tmp_path / "study")
    cache = tmp_path / "cache"
    ImageCache(cache, crop=32, resize_shortest=37).close()
    build = ["cache", "build", "--study", str(study.root), "--cache", str(cache),
             "--on-bad-image", "skip", "--no-progress", "--json"]  # fmt: skip
    assert main(build) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == 1
    with ImageCache(cache) as opened:
        assert list(opened.skipped()) == [str(victim.resolve())]

    features = tmp_path / "features"
    for split in ("train", "val", "test", "mimic"):
        out = features / f"{split}.safetensors"
        argv = ["features", "--study", str(study.root), "--split", split, "--cache", str(cache),
                "--weights", "tiny", "--out", str(out), "--no-progress"]  # fmt: skip
        assert main(argv) == 0, capsys.readouterr().err
        assert not partial_dir(out).exists()
    err = capsys.readouterr().err
    assert "1 image(s)" in err and "skipped as bad images" in err and victim.name in err
    store = load_feature_store(features / "train.safetensors")
    assert json.loads(store.meta["skipped_ids"]) == [victim.name]
    assert victim.name not in store.ids

    runs = tmp_path / "runs"
    train = ["train", "--mode", "frozen", "--study", str(study.root), "--features",
             str(features), "--out", str(runs), "--epochs", "1", "--no-progress",
             "--tracking", "none", "--set", "data.crop=32",
             "--set", "data.resize_shortest=37"]  # fmt: skip
    assert main(train) == 0
    err = capsys.readouterr().err
    assert "left out" in err and victim.name in err


def test_a_later_good_build_forgets_the_skip(tmp_path, capsys):
    study, victim = broken_study(tmp_path / "study")
    good = generate_study(
        tmp_path / "again", n_train=12, n_val=6, n_test=6, n_mimic=4, image_size=40, seed=0,
        progress=False,
    )  # fmt: skip
    with ImageCache(tmp_path / "cache", crop=32, resize_shortest=37) as cache:
        cache.build([victim], 1, False, "skip")
        assert list(cache.skipped()) == [str(victim.resolve())]
        victim.write_bytes((good.nih_images / victim.name).read_bytes())  # mended
        cache.build([victim], 1, False, "skip")
        assert cache.skipped() == {}


@pytest.mark.slow
def test_finetune_leaves_a_skipped_image_out(tmp_path, capsys):
    study, victim = broken_study(tmp_path / "study")
    cache = tmp_path / "cache"
    ImageCache(cache, crop=32, resize_shortest=37).close()
    build = ["cache", "build", "--study", str(study.root), "--cache", str(cache),
             "--on-bad-image", "skip", "--no-progress"]  # fmt: skip
    assert main(build) == 0
    train = ["train", "--mode", "finetune", "--backbone", "tiny", "--study", str(study.root),
             "--cache", str(cache), "--out", str(tmp_path / "runs"), "--epochs", "1",
             "--batch-size", "4", "--no-progress", "--tracking", "none",
             "--set", "data.crop=32", "--set", "data.resize_shortest=37"]  # fmt: skip
    capsys.readouterr()
    assert main(train) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "left out" in err and victim.name in err
