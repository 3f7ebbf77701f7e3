"""Grad-CAM (qcxr.evaluate.explain) and `qcxr predict --explain`. Fast: against finite
differences and PIL, invariances, the split model against the model's logits (both modes and
heads). Slow: really trained runs (finetune CDL via `qcxr train`, frozen DQC) whose heat maps
must follow a synthetic lesion from the left to the right lung; ResNet-50's split."""

from __future__ import annotations

from functools import cache, partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from qcxr.config import from_dict
from qcxr.evaluate.explain import SplitModel, explain_fn, grad_cam, normalised, split_model

# ------------------------------------------------------------------ a small conv net, by hand


def _conv_net(seed: int = 0, c_in: int = 3, c: int = 4, hidden: int = 5, n: int = 3):
    """A 3x3 stride-2 conv + ReLU block and a nonlinear head (Dense -> tanh -> Dense) on its
    global mean; the head also in numpy float64 for the finite differences."""
    rng = np.random.default_rng(seed)
    kernel = rng.normal(0, 0.5, (3, 3, c_in, c)).astype(np.float32)
    w1, b1 = rng.normal(0, 1, (c, hidden)), rng.normal(0, 0.3, hidden)
    w2, b2 = rng.normal(0, 1, (hidden, n)), rng.normal(0, 0.3, n)

    def feature_map(images):
        dims = ("NHWC", "HWIO", "NHWC")
        x = jax.lax.conv_general_dilated(images, kernel, (2, 2), "SAME", dimension_numbers=dims)
        return jax.nn.relu(x)

    def logits_of_map(a):
        pooled = a.mean(axis=(1, 2))
        return jnp.tanh(pooled @ w1.astype(np.float32) + b1) @ w2.astype(np.float32) + b2

    def head_np(pooled):
        return np.tanh(pooled @ w1 + b1) @ w2 + b2

    return feature_map, logits_of_map, head_np


def _finite_difference_cams(activations, head_np, labels, eps=1e-6):
    """Grad-CAM with dy/dA from central differences in float64, entry by entry."""
    a = np.asarray(activations, np.float64)
    _, h, w, c = a.shape
    cams = np.zeros((*labels.shape, h, w))
    for b in range(a.shape[0]):
        steps = np.eye(h * w * c).reshape(-1, h, w, c) * eps
        plus = head_np((a[b] + steps).mean(axis=(1, 2)))
        minus = head_np((a[b] - steps).mean(axis=(1, 2)))
        grads = ((plus - minus) / (2 * eps)).reshape(h, w, c, -1)
        for k, label in enumerate(labels[b]):
            weights = grads[..., label].mean(axis=(0, 1))
            cams[b, k] = np.maximum((a[b] * weights).sum(-1), 0.0)
    return cams


def test_grad_cam_matches_finite_differences():
    feature_map, logits_of_map, head_np = _conv_net()
    images = jax.random.normal(jax.random.PRNGKey(0), (3, 12, 12, 3))
    labels = np.array([[0, 2], [1, 0], [2, 1]])
    cams, logits = grad_cam(feature_map, logits_of_map, images, jnp.asarray(labels))
    activations = feature_map(images)
    expected = _finite_difference_cams(activations, head_np, labels)
    assert cams.shape == (3, 2, 6, 6)
    assert expected.max() > 0 and (expected == 0).any()  # the ReLU both passes and cuts
    np.testing.assert_allclose(np.asarray(cams), expected, atol=2e-5 * expected.max())
    pooled = np.asarray(activations, np.float64).mean(axis=(1, 2))
    np.testing.assert_allclose(np.asarray(logits), head_np(pooled), rtol=1e-5, atol=1e-5)


def test_explain_fn_upsamples_like_pil_and_takes_the_top_labels():
    feature_map, logits_of_map, head_np = _conv_net(seed=1, n=4)
    model = SplitModel(lambda v, x: feature_map(x), lambda v, a: logits_of_map(a), {})
    images = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
    probs, top, maps = explain_fn(model, 2)({}, images)
    activations = feature_map(images)
    logits = head_np(np.asarray(activations, np.float64).mean(axis=(1, 2)))
    np.testing.assert_allclose(np.asarray(probs), 1 / (1 + np.exp(-logits)), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(top), np.argsort(-logits, axis=1)[:, :2])
    raw = _finite_difference_cams(activations, head_np, np.argsort(-logits, axis=1)[:, :2])
    for b, k in np.ndindex(2, 2):
        # PIL's bilinear resize, an independent upsampler on the same half-pixel grid
        up = np.asarray(
            Image.fromarray(raw[b, k].astype(np.float32), "F").resize(
                (16, 16), Image.Resampling.BILINEAR
            )
        )
        want = (up - up.min()) / (up.max() - up.min())
        np.testing.assert_allclose(np.asarray(maps[b, k]), want, atol=1e-4)
    assert maps.shape == (2, 2, 16, 16) and float(maps.min()) == 0.0 and float(maps.max()) == 1.0
    constant = np.asarray(normalised(jnp.stack([jnp.full((4, 4), 3.0), jnp.eye(4)])))
    assert (constant[0] == 0).all() and (constant[1] == np.eye(4)).all()


# ------------------------------------------------------------------ the real models, split


def _config(mode: str, head: str, **model):
    return from_dict(
        {
            "task": "cxr8",
            "model": {"backbone": "tiny", "head": head, **model},
            "train": {"mode": mode, "seed": 3},
        }
    )


def _uint8_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@cache
def _tiny_finetune(head: str = "cdl"):
    """(config, variables, split model) of an initialised tiny-backbone finetune model; made
    once per head (tests copy before they change anything)."""
    from qcxr.train.model import init_variables

    config = _config("finetune", head)
    variables, _ = init_variables(config, 3)
    return config, variables, split_model(config, variables, "unused")


@pytest.mark.parametrize("head", ["cdl", "dqc"])
def test_finetune_split_gives_the_models_logits(head):
    from qcxr.train.model import build_model

    config, variables, model = _tiny_finetune(head)
    images = _uint8_images(4)

    @jax.jit  # one compilation for both sides
    def both(v, x):
        activations = model.feature_map(v, x)
        return activations, model.logits_of_map(v, activations), build_model(config).logits(v, x)

    activations, got, want = both(variables, images)
    assert activations.shape == (4, 4, 4, 64)  # 32 px / 8 px patches, 64 channels
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("head", "standardised"), [("cdl", True), ("dqc", False)])
def test_frozen_split_gives_the_models_logits(tmp_path, head, standardised):
    """A frozen head on the tiny backbone's features: the split model equals predict's feature
    function (backbone rebuilt, identity checked, standardisation) followed by the head."""
    from qcxr import rundir
    from qcxr.evaluate.predict import _feature_fn
    from qcxr.train.data import save_feature_norm
    from qcxr.train.model import build_model, init_variables

    config = _config("frozen", head)
    variables, _ = init_variables(config, 3, feature_dim=64)
    rundir.write_json(tmp_path / rundir.VERSIONS, {"weights": "tiny-random(seed=3)"})
    if standardised:
        rng = np.random.default_rng(5)
        norm = rng.normal(0, 0.1, 64).astype(np.float32), rng.uniform(0.5, 2, 64)
        save_feature_norm(tmp_path, (norm[0], norm[1].astype(np.float32)))
    model = split_model(config, variables, tmp_path)
    assert ("norm" in model.variables) == standardised
    images = _uint8_images(3, seed=1)
    features = _feature_fn(config, tmp_path)

    @jax.jit  # one compilation for both sides
    def both(own, v, x):
        split = model.logits_of_map(own, model.feature_map(own, x))
        return split, build_model(config).logits(v, features(x))

    got, want = both(model.variables, variables, images)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    rundir.write_json(tmp_path / rundir.VERSIONS, {"weights": "tiny-random(seed=9)"})
    with pytest.raises(ValueError, match="tiny-random"):  # features of another backbone
        split_model(config, variables, tmp_path)


def _raw_cams(model: SplitModel, variables, images, labels):
    def cams(v, x, y):
        return grad_cam(partial(model.feature_map, v), partial(model.logits_of_map, v), x, y)[0]

    return np.asarray(jax.jit(cams)(variables, images, jnp.asarray(labels)))


def test_cam_moves_with_the_image_by_whole_patches():
    """TinyBackbone has no padding and non-overlapping 8 px patches: rolling the image by one
    patch rolls every activation, leaves the pooled features and so the channel weights
    unchanged, and rolls the raw map by exactly one cell."""
    _, variables, model = _tiny_finetune()
    images = _uint8_images(2, size=48, seed=2)
    labels = np.array([[0, 3], [5, 1]])
    cams = _raw_cams(model, model.variables, images, labels)
    shifted = _raw_cams(model, model.variables, np.roll(images, (8, -16), axis=(1, 2)), labels)
    assert np.ptp(cams) > 0
    np.testing.assert_allclose(shifted, np.roll(cams, (1, -2), axis=(2, 3)), rtol=1e-5, atol=1e-6)


def test_cam_invariances_of_the_logit():
    """Scaling a logit by a > 0 scales its raw map by a (its [0, 1] map is unchanged); a bias
    changes nothing; a label whose logit ignores the image has an all-zero map."""
    _, variables, model = _tiny_finetune()
    images = _uint8_images(2, seed=3)
    labels = np.array([[0, 1, 2], [0, 1, 2]])
    head = variables["params"]["head"]["preprocess"]
    kernel = np.asarray(head["kernel"]).copy()
    kernel[:, 1] *= 2.5
    kernel[:, 2] = 0.0
    changed = jax.tree.map(lambda x: x, model.variables)
    changed["params"]["head"]["preprocess"] = {"kernel": kernel, "bias": head["bias"] + 4.0}
    before = _raw_cams(model, model.variables, images, labels)
    after = _raw_cams(model, changed, images, labels)
    np.testing.assert_allclose(after[:, 0], before[:, 0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(after[:, 1], 2.5 * before[:, 1], rtol=1e-5, atol=1e-7)
    assert (after[:, 2] == 0).all() and np.ptp(before[:, 2]) > 0
    np.testing.assert_allclose(
        np.asarray(normalised(after[:, :2])), np.asarray(normalised(before[:, :2])), atol=1e-5
    )


def test_an_images_map_does_not_depend_on_its_batch():
    _, _, model = _tiny_finetune()
    images = _uint8_images(4, seed=4)
    explain = explain_fn(model, 3)
    alone = explain(model.variables, images[2:3])
    together = explain(model.variables, images)
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_allclose(np.asarray(a[0]), np.asarray(b[2]), rtol=1e-5, atol=1e-6)


def test_resnet50_feature_map_is_stage_four():
    from qcxr.models.resnet import FEATURE_DIM, resnet50, variable_shapes

    variables = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s, jnp.float32),
        variable_shapes(),
        is_leaf=lambda leaf: isinstance(leaf, tuple),
    )
    images = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
    fmap = jax.eval_shape(partial(resnet50().apply, method="feature_map"), variables, images)
    assert fmap.shape == (2, 7, 7, FEATURE_DIM)  # before the global pool, 224 / 32 = 7


# ------------------------------------------------------------------ end to end, trained runs

LESIONS = ("Mass", "Nodule")  # checker textures of 8 and 26 cycles per width (data.render)
SIZE = 128  # images and crop: 16 x 16 patches of the tiny backbone
STRENGTH = 0.8  # texture amplitude; the study's own findings use 0.35
TRAIN_FLAGS = ["--lr", "1e-2", "--batch-size", "8", "--no-progress", "--set",
               "train.eval_batch_size=32", "--set", "data.loader_threads=2", "--set",
               f"data.resize_shortest={SIZE}", "--set", f"data.crop={SIZE}", "--set",
               "data.rotate_degrees=0"]  # fmt: skip


def _lesion_study(root, n_train: int = 96, seed: int = 0):
    """A study in the NIH-CXR-LT layout (`generate_study`) redrawn as a designed task: two
    labels, each present in half of the images, drawn strongly by the study's own renderer;
    every other label 0. A tiny model learns it in a few epochs, which the study's own
    long-tailed labels (mostly "No Finding") do not allow on a test budget."""
    from qcxr.data.datasets import study_paths
    from qcxr.data.render import Renderer
    from qcxr.data.synthetic import generate_study

    paths = generate_study(root, n_train=n_train, n_val=32, n_test=8, n_mimic=4,
                           image_size=SIZE, seed=seed, progress=False)  # fmt: skip
    renderer, rng = Renderer(SIZE, SIZE, seed), np.random.default_rng([seed, 7])
    for csv in study_paths(root).nih_csv.values():
        frame = pd.read_csv(csv)
        frame[list(frame.columns[1:-1])] = 0
        for name in LESIONS:
            frame[name] = (rng.random(len(frame)) < 0.5).astype(int)
        frame["No Finding"] = (frame[list(LESIONS)].sum(axis=1) == 0).astype(int)
        for image_id, *present in frame[["id", *LESIONS]].itertuples(index=False):
            findings = [n for n, p in zip(LESIONS, present, strict=True) if p]
            pixels = renderer.render(findings, rng, strength=STRENGTH)
            Image.fromarray(pixels, "L").save(paths.nih_images / image_id)
        frame.to_csv(csv, index=False)
    return paths


class _Placed:
    """Stands in for `Renderer.add_finding`'s generator: the finding goes on the given side and
    every other draw is its range's middle, so left and right are the same texture, moved."""

    def __init__(self, side: int):
        self.side = side

    def choice(self, options):
        return self.side

    def uniform(self, low, high):
        return 0.5 * (low + high)


def _left_and_right(out, name: str, seed: int = 3) -> tuple[list, list[float]]:
    """One chest with the finding `name` in the left, then in the right lung (image columns):
    the two PNG paths and the finding's centre column in each."""
    from qcxr.data.render import Renderer

    renderer = Renderer(SIZE, SIZE, seed)
    base = renderer.render([], np.random.default_rng(seed)).astype(np.float32) / 255.0
    scale = renderer.bank((0.93, 1.05), False)[0][0]
    paths, centres = [], []
    for side in (-1, 1):
        image = base.copy()
        renderer.add_finding(image, name, _Placed(side), scale, STRENGTH)
        path = out / f"{name}-{'left' if side < 0 else 'right'}.png"
        Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), "L").save(path)
        paths.append(path)
        centres.append((SIZE - 1) / 2 * (1 + side * 0.5 * (0.15 + 0.55) * scale))
    return paths, centres


def _column_centre(heat: np.ndarray) -> float:  # centre of mass along the image columns
    return float((heat.sum(axis=0) * np.arange(heat.shape[1])).sum() / heat.sum())


def _check_page(out, run, paths) -> dict[tuple[int, str], np.ndarray]:
    """index.html, predictions.csv and PNG shapes; the heat maps by (image, label)."""
    from qcxr.evaluate.predict import predict_images

    page = (out / "index.html").read_text()
    assert str(run) in page and "not a diagnosis" in page and "colorbar.png" in page
    assert ", ".join(LESIONS) in page  # the label set
    table = pd.read_csv(out / "predictions.csv")
    want = predict_images(run, paths)
    assert table["image"].tolist() == [str(p) for p in paths]
    np.testing.assert_allclose(table[list(LESIONS)], want[list(LESIONS)], rtol=1e-5, atol=1e-6)
    heat = {}
    for n, path in enumerate(paths):
        stem = f"{n + 1:03d}-{path.stem}"
        crop = np.asarray(Image.open(out / f"{stem}.png"))
        assert crop.shape == (SIZE, SIZE, 3) and f'src="{stem}.png"' in page
        for k, name in enumerate(table.iloc[n][list(LESIONS)].sort_values(ascending=False).index):
            overlay = Image.open(out / f"{stem}-{k + 1}-{name}.png")
            cam = Image.open(out / f"{stem}-{k + 1}-{name}-cam.png")
            assert overlay.mode == "RGB" and cam.mode == "L"
            assert overlay.size == cam.size == (SIZE, SIZE)
            assert f'src="{stem}-{k + 1}-{name}.png"' in page
            heat[n, name] = np.asarray(cam, np.float64) / 255.0
            assert np.ptp(heat[n, name]) > 0.9  # not constant: spans [0, 1]
    return heat


def _check_follows_lesion(heat, centres) -> None:
    """The Mass map of the image with the mass on the left and on the right (images 0 and 1):
    its centre of mass moves the way the mass moved, and its peak lies on the mass."""
    left, right = heat[0, "Mass"], heat[1, "Mass"]
    moved = _column_centre(right) - _column_centre(left)
    # Measured: 6 px of 128 (the body's outline keeps some heat in both); the peaks sit on the
    # mass, within 2 px of its centre.
    assert moved > 2.0, (moved, _column_centre(left), _column_centre(right))
    for heat_map, centre in ((left, centres[0]), (right, centres[1])):
        peak_column = np.unravel_index(np.argmax(heat_map), heat_map.shape)[1]
        assert abs(peak_column - centre) < 0.1 * SIZE, (peak_column, centre)


@pytest.fixture(scope="module")
def lesions(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    _lesion_study(root / "study")
    paths, centres = _left_and_right(root, "Mass")
    return root, paths + _left_and_right(root, "Nodule")[0], centres


@pytest.mark.slow
def test_explain_finetuned_run_follows_the_lesion(lesions, capsys):
    """`qcxr train` (finetune, tiny backbone, CDL), then `qcxr predict --explain`."""
    from qcxr.cli import main

    root, paths, centres = lesions
    run, out = root / "finetune", root / "page-finetune"
    study = ["--study", str(root / "study"), "--cache", str(root / "cache")]
    assert main(["train", "--mode", "finetune", "--backbone", "tiny", "--head", "cdl",
                 "--labels", ",".join(LESIONS), *study, "--run-dir", str(run),
                 "--epochs", "6", *TRAIN_FLAGS]) == 0  # fmt: skip
    capsys.readouterr()
    args = ["predict", str(run), *map(str, paths), "--explain", str(out), "--top", "2"]
    assert main([*args, "--batch-size", "3"]) == 0
    assert "index.html" in capsys.readouterr().out
    _check_follows_lesion(_check_page(out, run, paths), centres)


def _frozen_data(root, config):
    """FrozenData of the tiny backbone's features (random init, the run's seed) of the study's
    images, standardised as `qcxr train` standardises frozen features."""
    from qcxr.data.datasets import study_paths
    from qcxr.evaluate.predict import _feature_fn, load_images
    from qcxr.train.data import FrozenData, Split, feature_norm, standardized

    paths = study_paths(root / "study")
    features = _feature_fn(config, root)  # no versions.json there: the config's backbone
    splits = {}
    for split, csv in paths.nih_csv.items():
        frame = pd.read_csv(csv)
        images = load_images([paths.nih_images / i for i in frame["id"]], config)
        inputs = np.asarray(features(images), np.float32)
        labels = frame[list(LESIONS)].to_numpy(np.float32)
        splits[split] = Split(frame["id"].tolist(), labels, list(LESIONS), split, inputs)
    norm = feature_norm(splits["train"].inputs)
    splits = {k: standardized(v, norm) for k, v in splits.items()}
    return FrozenData(splits["train"], splits["val"], {"nih": splits["test"]},
                      "tiny-random(seed=0)", norm)  # fmt: skip


@pytest.mark.slow
def test_explain_frozen_dqc_run_follows_the_lesion(lesions, capsys):
    """A DQC head trained on frozen tiny-backbone features (`qcxr features` extracts with
    ResNet50 only, so the features are made here), then `qcxr predict --explain`: the backbone
    is rebuilt from the recorded identity and the run's standardisation is applied."""
    from qcxr.cli import main
    from qcxr.train.frozen import train_frozen

    root, paths, centres = lesions
    config = from_dict(
        {
            "task": "lesions",
            "labels": list(LESIONS),
            "model": {"backbone": "tiny", "head": "dqc"},
            "data": {"resize_shortest": SIZE, "crop": SIZE},
            "train": {"mode": "frozen", "seed": 0, "max_epochs": 30, "learning_rate": 1e-2},
        }
    )
    run, out = root / "frozen", root / "page-frozen"
    (result,) = train_frozen([config], [run], _frozen_data(root, config), progress=False)
    assert result.status == "finished", result.reason
    assert main(["predict", str(run), *map(str, paths), "--explain", str(out)]) == 0
    assert "index.html" in capsys.readouterr().out
    _check_follows_lesion(_check_page(out, run, paths), centres)


@pytest.mark.slow
def test_resnet50_split_gives_the_models_logits_and_maps():
    """ResNet-50 (random weights, finetune layout): the stage-4 split reproduces the model's
    logits, and explain_fn gives [0, 1] maps on the input grid (64 px: stage 4 is 2 x 2)."""
    from qcxr.train.model import build_model, init_variables

    config = from_dict({"model": {"backbone": "resnet50", "weights": "random:0"},
                        "train": {"mode": "finetune"}})  # fmt: skip
    variables, _ = init_variables(config, 0)
    model = split_model(config, variables, "unused")
    images = _uint8_images(2, size=64, seed=6)
    probs, top, maps = explain_fn(model, 3)(model.variables, images)
    want = jax.jit(build_model(config).logits)(variables, images)
    np.testing.assert_allclose(np.asarray(probs), np.asarray(jax.nn.sigmoid(want)), atol=1e-6)
    assert top.shape == (2, 3) and maps.shape == (2, 3, 64, 64)
    assert float(maps.min()) == 0.0 and float(maps.max()) == 1.0
