"""`qcxr predict` plumbing: checkpoint -> preprocessing -> model -> one row per image."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
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


def _distinct_images(tmp_path):
    """Grayscale and RGB images of different sizes, brightness and structure."""
    rng = np.random.default_rng(1)
    paths = []
    for k, (w, h) in enumerate([(300, 260), (256, 320), (400, 400)]):
        yy, xx = np.mgrid[0:h, 0:w]
        base = 40 + 60 * k + 80 * ((xx // (16 * (k + 1)) + yy // 24) % 2)
        noisy = np.clip(base + rng.normal(0, 20, (h, w)), 0, 255).astype(np.uint8)
        image = Image.fromarray(noisy, "L")
        if k == 1:  # an RGB image: its channels differ
            image = Image.merge("RGB", (image, image.point(lambda v: 255 - v), image))
        path = tmp_path / f"distinct{k}.png"
        image.save(path)
        paths.append(path)
    return paths


def _tiny_finetune_variables(rng, channels=3, patch=8, widths=(32, 64), n=8):
    """Made-up variables in the layout of a finetuned tiny-backbone CDL model (train.model):
    BatchNorm statistics and affine terms away from their identity initial values, so every
    term of the forward pass shows in the output."""
    dims = (patch * patch * channels, *widths)
    params, stats = {}, {}
    for k, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        params[f"Dense_{k}"] = {"kernel": rng.normal(0, d_in**-0.5, (d_in, d_out))}
        params[f"BatchNorm_{k}"] = {
            "scale": rng.uniform(0.5, 1.5, d_out),
            "bias": rng.normal(0, 0.2, d_out),
        }
        stats[f"BatchNorm_{k}"] = {
            "mean": rng.normal(0, 0.3, d_out),
            "var": rng.uniform(0.5, 2, d_out),
        }
    head = {"preprocess": {"kernel": rng.normal(0, widths[-1] ** -0.5, (widths[-1], n)),
                           "bias": rng.normal(0, 0.3, n)}}  # fmt: skip
    variables = {"params": {"backbone": params, "head": head}, "batch_stats": {"backbone": stats}}
    return _as_float32(variables)


def _as_float32(tree):
    if isinstance(tree, dict):
        return {k: _as_float32(v) for k, v in tree.items()}
    return np.asarray(tree, np.float32)


def _reference_probabilities(pixels, variables, patch=8, eps=1e-5):
    """The tiny-backbone CDL model by hand in numpy: ImageNet normalisation, 8x8 patches ->
    (Dense -> BatchNorm with running statistics -> ReLU) twice -> mean over patches -> Dense ->
    sigmoid."""
    x = np.broadcast_to(pixels / 255.0, (*pixels.shape[:-1], 3))
    x = (x - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    h, w, c = x.shape
    x = x.reshape(h // patch, patch, w // patch, patch, c).transpose(0, 2, 1, 3, 4)
    x = x.reshape(h // patch, w // patch, patch * patch * c)
    params, stats = variables["params"]["backbone"], variables["batch_stats"]["backbone"]
    for k in range(2):
        x = x @ params[f"Dense_{k}"]["kernel"].astype(np.float64)
        bn, st = params[f"BatchNorm_{k}"], stats[f"BatchNorm_{k}"]
        x = (x - st["mean"]) / np.sqrt(st["var"] + eps) * bn["scale"] + bn["bias"]
        x = np.maximum(x, 0.0)
    features = x.mean(axis=(0, 1))
    dense = variables["params"]["head"]["preprocess"]
    return 1 / (1 + np.exp(-(features @ dense["kernel"] + dense["bias"])))


def test_predict_real_checkpoint_roundtrip(tmp_path):
    """A real best checkpoint (tiny backbone, finetune mode, CDL head) written by the project's
    checkpoint writer and read back through load_best; the probabilities are computed by hand."""
    import yaml

    from qcxr.config import to_dict
    from qcxr.evaluate.predict import predict_images
    from qcxr.train.checkpoint import RunCheckpoints, load_best

    cfg = Config()
    cfg = dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, backbone="tiny", head="cdl"),
        train=dataclasses.replace(cfg.train, mode="finetune"),
    )
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    variables = _tiny_finetune_variables(np.random.default_rng(7))
    ckpt = RunCheckpoints(run)
    ckpt.save_best(1, variables, {"epoch": 1})
    ckpt.close()
    restored = load_best(run)[1]
    for path in (("params", "head", "preprocess", "kernel"), ("batch_stats", "backbone")):
        got, want = restored, variables
        for key in path:
            got, want = got[key], want[key]
        np.testing.assert_equal(_as_float32(got), want)
    paths = _distinct_images(tmp_path)
    frame = predict_images(run, paths, batch_size=2)
    expected = np.stack([_reference_probabilities(_reference_pixels(p), variables) for p in paths])
    assert np.ptp(expected, axis=0).max() > 0.05  # the made-up model tells the images apart
    np.testing.assert_allclose(frame[TASKS["cxr8"]].to_numpy(), expected, atol=1e-4)


def _fake_run(tmp_path, monkeypatch, weights: str | None):
    """A run directory whose versions.json records `weights`, with the fake model."""
    import qcxr.train.checkpoint as checkpoint
    import qcxr.train.model as model
    from qcxr import rundir

    n = len(TASKS["cxr8"])
    variables = {"a": np.ones(n, np.float32), "b": np.zeros(n, np.float32)}
    config = dataclasses.replace(
        Config(), train=dataclasses.replace(Config().train, mode="finetune")
    )
    monkeypatch.setattr(checkpoint, "load_best", lambda d: (config, variables))
    monkeypatch.setattr(model, "build_model", lambda c: _FakeModel())
    run = tmp_path / "run"
    run.mkdir(parents=True)
    if weights is not None:
        rundir.write_json(run / rundir.VERSIONS, {"weights": weights})
    return run


def test_predict_warns_when_the_backbone_weights_were_random(tmp_path, monkeypatch, capsys):
    from qcxr.models.weights import random_weights_warning

    paths = _images(tmp_path)[:1]
    for weights, warned in (("random(seed=4)", True), ("microsoft/resnet-50", False)):
        run = _fake_run(tmp_path / weights.replace("/", "_"), monkeypatch, weights)
        assert main(["predict", str(run), str(paths[0])]) == 0
        err = capsys.readouterr().err
        assert (random_weights_warning(weights) or "") in err
        assert ("RANDOM BACKBONE WEIGHTS" in err) == warned
    # No versions.json: the config's weights decide (the default is ImageNet, no warning).
    run = _fake_run(tmp_path / "none", monkeypatch, None)
    assert main(["predict", str(run), str(paths[0])]) == 0
    assert "RANDOM" not in capsys.readouterr().err


def test_every_predict_option_has_help():
    import argparse

    from qcxr.cli import build_parser, subcommand_parsers

    (parser,) = [p for p in subcommand_parsers(build_parser()) if p.prog == "qcxr predict"]
    actions = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    assert {a.dest for a in actions} >= {"run_dir", "images", "explain", "top", "batch_size"}
    missing = [a.dest for a in actions if not (a.help and a.help.strip())]
    assert not missing, f"qcxr predict options without help: {missing}"
    assert "Grad-CAM" in parser.format_help()


def _made_up_explanation(run):
    """An Explanation with known maps (no model): 2 images, 3 labels, top 2, 32 px crops."""
    from qcxr.evaluate.explain import Explanation

    labels = ["Mass", "Pleural <Thickening>", "Nodule"]
    probs = pd.DataFrame([[0.9, 0.2, 0.5], [0.1, 0.7, 0.3]], columns=labels)
    probs.insert(0, "image", ["a/x ray.png", "b/x ray.png"])
    ramp = np.broadcast_to(np.linspace(0, 1, 32, dtype=np.float32), (32, 32))
    maps = np.stack([np.stack([ramp, ramp.T]), np.stack([ramp[:, ::-1], np.zeros((32, 32))])])
    crops = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    config = dataclasses.replace(Config(), labels=tuple(labels), task="mine")
    return Explanation(probs, np.array([[0, 2], [1, 2]]), maps, crops, labels, config, run)


def test_explanation_page_files_and_colours(tmp_path):
    import matplotlib

    from qcxr.evaluate.explain_page import COLORMAP, OPACITY, write_explanation

    explanation = _made_up_explanation(tmp_path / "run")
    banner = "!! WARNING: RANDOM BACKBONE WEIGHTS (random(seed=0))"
    index = write_explanation(tmp_path / "out", explanation, "random(seed=0)", banner)
    page = index.read_text()
    for text in (str(tmp_path / "run"), "mine: Mass, Pleural &lt;Thickening&gt;, Nodule",
                 "not a diagnosis", banner, "colorbar.png", "predictions.csv"):  # fmt: skip
        assert text in page, text
    assert "<Thickening>" not in page  # label names are escaped
    out = tmp_path / "out"
    names = ["001-x_ray-1-Mass", "001-x_ray-2-Nodule", "002-x_ray-1-Pleural_Thickening"]
    for name in names:
        assert f'src="{name}.png"' in page
        assert np.asarray(Image.open(out / f"{name}.png")).shape == (32, 32, 3)
        assert np.asarray(Image.open(out / f"{name}-cam.png")).shape == (32, 32)
    np.testing.assert_array_equal(
        np.asarray(Image.open(out / "001-x_ray.png")), explanation.crops[0]
    )
    cam = np.asarray(Image.open(out / "001-x_ray-2-Nodule-cam.png"), np.float64) / 255
    np.testing.assert_allclose(cam, explanation.maps[0, 1], atol=0.5 / 255 + 1e-6)
    # The overlay: the colormap blended over the crop with an opacity growing with the heat.
    overlay = np.asarray(Image.open(out / "001-x_ray-1-Mass.png"), np.float64) / 255
    heat = explanation.maps[0, 0]
    alpha = (OPACITY[0] + (OPACITY[1] - OPACITY[0]) * heat)[..., None]
    colour = matplotlib.colormaps[COLORMAP](heat)[..., :3]
    want = (1 - alpha) * explanation.crops[0] / 255 + alpha * colour
    np.testing.assert_allclose(overlay, want, atol=0.5 / 255 + 1e-6)
    table = pd.read_csv(out / "predictions.csv")
    pd.testing.assert_frame_equal(table, explanation.probabilities, check_dtype=False)
    assert Image.open(out / "colorbar.png").size[0] > 200
