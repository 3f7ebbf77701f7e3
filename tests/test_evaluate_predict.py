"""`qcxr predict` plumbing: checkpoint -> preprocessing -> model -> one row per image."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from qcxr.cli import main
from qcxr.config import Config
from qcxr.labels import TASKS


def _reference_pixels(path):
    """Independent preprocessing: shortest side 256 (bicubic), center crop 224, as 0..255."""
    image = Image.open(path)
    w, h = image.size
    size = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
    image = image.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - 224) // 2, (size[1] - 224) // 2
    arr = np.asarray(image, dtype=np.float64)[top : top + 224, left : left + 224]
    return arr if arr.ndim == 3 else arr[..., None]


def _images(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for k, (w, h) in enumerate([(300, 260), (256, 320), (400, 400)]):
        path = tmp_path / f"img{k}.png"
        Image.fromarray(rng.integers(0, 256, size=(h, w), dtype=np.uint8), "L").save(path)
        paths.append(path)
    return paths


class _FakeModel:
    """logits = a * mean pixel / 255 + b: depends on every pixel the preprocessing produced."""

    def __init__(self):
        self.mode = "finetune"

    @staticmethod
    def logits(variables, images):
        import jax.numpy as jnp

        mean = jnp.mean(images.astype(jnp.float32), axis=(1, 2, 3)) / 255.0
        return mean[:, None] * variables["a"][None, :] + variables["b"][None, :]


def test_predict_finetune_run_against_independent_preprocessing(tmp_path, monkeypatch, capsys):
    import qcxr.train.checkpoint as checkpoint
    import qcxr.train.model as model

    n = len(TASKS["cxr8"])
    variables = {"a": np.linspace(-3, 3, n).astype(np.float32), "b": np.full(n, 0.1, np.float32)}
    config = Config()
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, mode="finetune"))
    seen = []
    monkeypatch.setattr(checkpoint, "load_best", lambda d: (seen.append(d), (config, variables))[1])
    monkeypatch.setattr(model, "build_model", lambda c: _FakeModel())
    paths = _images(tmp_path)
    out_csv = tmp_path / "out.csv"
    args = ["predict", str(tmp_path / "run"), *map(str, paths), "--batch-size", "2"]
    assert main([*args, "--csv", str(out_csv)]) == 0
    frame = pd.read_csv(out_csv)
    assert list(frame.columns) == ["image", *TASKS["cxr8"]]
    assert frame["image"].tolist() == [str(p) for p in paths]
    for row, path in zip(frame.itertuples(index=False), paths, strict=True):
        mean = _reference_pixels(path).mean() / 255.0
        expected = 1 / (1 + np.exp(-(mean * variables["a"] + variables["b"])))
        np.testing.assert_allclose(np.asarray(row[1:], dtype=float), expected, atol=2e-3)
    assert "wrote" in capsys.readouterr().out
    assert main([*args, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 3 and set(rows[0]) == {"image", *TASKS["cxr8"]}
    assert str(seen[0]) == str(tmp_path / "run")


def test_predict_missing_image_names_the_file(tmp_path, monkeypatch, capsys):
    import qcxr.train.checkpoint as checkpoint
    import qcxr.train.model as model

    n = len(TASKS["cxr8"])
    variables = {"a": np.zeros(n, np.float32), "b": np.zeros(n, np.float32)}
    config = dataclasses.replace(
        Config(), train=dataclasses.replace(Config().train, mode="finetune")
    )
    monkeypatch.setattr(checkpoint, "load_best", lambda d: (config, variables))
    monkeypatch.setattr(model, "build_model", lambda c: _FakeModel())
    assert main(["predict", str(tmp_path), str(tmp_path / "nope.png")]) == 1
    assert "nope.png" in capsys.readouterr().err


def test_predict_real_checkpoint_roundtrip(tmp_path):
    """A real best checkpoint (tiny backbone, finetune mode) read back through load_best."""
    models = pytest.importorskip("qcxr.models")
    pytest.importorskip("qcxr.data.augment")
    if not hasattr(models, "ClassicalHead"):
        pytest.skip("qcxr.models.ClassicalHead not available yet")
    import jax
    import yaml

    from qcxr.config import to_dict
    from qcxr.evaluate.predict import predict_images
    from qcxr.train.checkpoint import RunCheckpoints
    from qcxr.train.model import build_model, init_variables

    cfg = Config()
    cfg = dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, backbone="tiny", head="cdl"),
        train=dataclasses.replace(cfg.train, mode="finetune"),
    )
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    variables, _ = init_variables(cfg, 0)
    ckpt = RunCheckpoints(run)
    ckpt.save_best(1, variables, {"epoch": 1})
    ckpt.close()
    paths = _images(tmp_path)
    frame = predict_images(run, paths, batch_size=2)
    from qcxr.data.preprocess import preprocess

    images = np.stack([preprocess(p) for p in paths])
    expected = np.asarray(jax.nn.sigmoid(build_model(cfg).logits(variables, images)))
    np.testing.assert_allclose(frame[TASKS["cxr8"]].to_numpy(), expected, atol=1e-5)
