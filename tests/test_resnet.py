"""The Flax ResNet-50 against independent PyTorch references: Hugging Face and torchvision.

References: transformers' PyTorch `ResNetModel` with random weights from `ResNetConfig()` (the
architecture of microsoft/resnet-50), and torchvision's own `resnet50(weights=None)` (torchvision
0.28.0 beside the CPU build of torch, imported through the shim in conftest.py). Each is saved as
its library saves it, loaded through `load_resnet50_weights`, and its pooled features compared
with ours on random images (batch 2, 64 x 64), in two precisions:

- float64 (jax x64, torch `.double()`; the same float32-valued weights on both sides): within 1e-4
  absolute, issue 4's criterion literally. Measured ~7e-13, so also asserted below 1e-9: the
  import is exact and only float64 rounding is left.
- float32: within 1e-4 of the feature scale. An absolute 1e-4 would test float32 rounding, not
  the import: through 53 layers of a random network torch's own float32 features differ from its
  float64 ones by 2.8e-4 to 4.3e-4 at a feature scale of ~8, and ours from torch's by ~2.5e-4
  (3e-5 of the scale).
"""

from __future__ import annotations

import copy
import functools
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qcxr.models.resnet import FEATURE_DIM, init_resnet50_variables, resnet50, resnet50_param_count
from qcxr.models.weights import (
    WeightsMismatchError,
    WeightsNotFoundError,
    load_resnet50_weights,
    random_weights_warning,
    resolve_resnet50_weights,
)

PAPER_RESNET50_PARAMS = 23_508_032  # Table II: ResNet50 without its classifier
PRECISIONS = ["float64", "float32"]
FLOAT64_ATOL = 1e-4  # issue 4's Done-when: same pooled features within 1e-4
FLOAT64_EXACT = 1e-9  # what float64 leaves when the import is exact (measured ~7e-13)
FLOAT32_SCALED_TOL = 1e-4  # of the feature scale; see the module docstring


def test_param_count_is_table_ii():
    assert resnet50_param_count() == PAPER_RESNET50_PARAMS


def test_param_count_matches_transformers():
    pytest.importorskip("torch")
    from transformers import ResNetConfig, ResNetModel

    hf = ResNetModel(ResNetConfig())
    assert resnet50_param_count() == sum(p.numel() for p in hf.parameters())


# ----------------------------------------------------------------------------- torch references


def _randomise_batchnorm(model, seed: int) -> None:
    """Random BatchNorm affine weights, and running statistics measured on random images.

    At init BatchNorm's running stats are (0, 1) and would not be exercised; measured ones are
    nonzero everywhere and keep the activations of the random network at a moderate scale (pooled
    features up to ~10) for every reference, as a pretrained network's are.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for module in norms:
            module.weight.copy_(0.5 + torch.rand(module.num_features, generator=gen))
            module.bias.copy_(0.1 * torch.randn(module.num_features, generator=gen))
            module.momentum = None  # cumulative average: running stats = this batch's stats
        model.train()
        model(torch.randn(4, 3, 64, 64, generator=gen))
    for module in norms:
        module.momentum = 0.1
    model.eval()


@pytest.fixture(scope="module")
def hf_model():
    torch = pytest.importorskip("torch")
    from transformers import ResNetConfig, ResNetModel

    torch.manual_seed(0)
    model = ResNetModel(ResNetConfig())
    _randomise_batchnorm(model, seed=1)
    return model


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.standard_normal((2, 3, 64, 64)).astype(np.float32)  # NCHW, as torch takes them


def _torch_pooled(model, images_nchw: np.ndarray, precision: str) -> np.ndarray:
    """Pooled features of a torch HF ResNetModel or torchvision resnet50 (fc = Identity), eval."""
    import torch

    x = torch.from_numpy(images_nchw)
    if precision == "float64":
        model, x = copy.deepcopy(model).double(), x.double()
    with torch.no_grad():
        out = model.eval()(x)
    return getattr(out, "pooler_output", out).flatten(1).numpy()


@functools.cache
def _jitted_apply(precision: str):
    # One compiled forward per precision for the whole module (op by op is ~4x slower here).
    return jax.jit(functools.partial(resnet50(dtype=jnp.dtype(precision)).apply, train=False))


def _flax_pooled(variables: dict, images_nchw: np.ndarray, precision: str) -> np.ndarray:
    x = images_nchw.transpose(0, 2, 3, 1)
    if precision == "float32":
        return np.asarray(_jitted_apply(precision)(variables, jnp.asarray(x)))
    with jax.enable_x64(True):
        variables = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), variables)
        return np.asarray(_jitted_apply(precision)(variables, jnp.asarray(x, jnp.float64)))


def _assert_matches(ours: np.ndarray, reference: np.ndarray, precision: str) -> None:
    """float64: 1e-4 absolute (and exact to 1e-9); float32: 1e-4 of the feature scale."""
    assert ours.shape == reference.shape
    assert ours.dtype == reference.dtype == np.dtype(precision)
    scale = float(np.abs(reference).max())
    assert scale > 1.0  # a vanishing reference would make the check empty
    error = float(np.abs(ours - reference).max())
    if precision == "float64":
        np.testing.assert_allclose(ours, reference, rtol=0, atol=FLOAT64_ATOL)
        assert error <= FLOAT64_EXACT, f"float64 should leave only rounding, got {error:.3g}"
    else:
        assert error <= FLOAT32_SCALED_TOL * scale, f"{error:.3g} at feature scale {scale:.3g}"


@pytest.fixture(scope="module")
def hf_dir(hf_model, tmp_path_factory):
    directory = tmp_path_factory.mktemp("hf-resnet")
    hf_model.save_pretrained(directory)
    assert (directory / "model.safetensors").is_file()
    return directory


@pytest.mark.parametrize("precision", PRECISIONS)
def test_hf_directory_imports_exactly(hf_model, hf_dir, images, precision):
    variables = load_resnet50_weights(hf_dir)
    ours = _flax_pooled(variables, images, precision)
    _assert_matches(ours, _torch_pooled(hf_model, images, precision), precision)


@pytest.mark.slow
def test_hf_import_exact_at_224(hf_model, hf_dir):
    image = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    pooled = _flax_pooled(load_resnet50_weights(hf_dir), image, "float32")
    assert pooled.shape == (1, FEATURE_DIM)
    _assert_matches(pooled, _torch_pooled(hf_model, image, "float32"), "float32")


def test_hf_pytorch_model_bin_and_classifier_checkpoint(hf_model, hf_dir, tmp_path):
    """pytorch_model.bin, and the ResNetForImageClassification layout microsoft/resnet-50 uses."""
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification

    classifier = ResNetForImageClassification(ResNetConfig(num_labels=1000))
    classifier.resnet.load_state_dict(hf_model.state_dict())
    (tmp_path / "config.json").write_text(classifier.config.to_json_string())
    torch.save(classifier.state_dict(), tmp_path / "pytorch_model.bin")
    assert any(k.startswith("resnet.") for k in classifier.state_dict())
    ours = load_resnet50_weights(tmp_path)
    reference = load_resnet50_weights(hf_dir)
    jax.tree_util.tree_map(np.testing.assert_array_equal, ours, reference)


def test_train_mode_matches_torch_batch_statistics(hf_model, hf_dir, images):
    """train=True normalises with batch statistics and moves running means as torch (0.1)."""
    import torch

    variables = load_resnet50_weights(hf_dir)
    ours, updated = resnet50().apply(
        variables, jnp.asarray(images.transpose(0, 2, 3, 1)), train=True, mutable=["batch_stats"]
    )
    reference_model = copy.deepcopy(hf_model).train()
    with torch.no_grad():
        reference = reference_model(torch.from_numpy(images)).pooler_output.flatten(1).numpy()
    # Batch statistics of the last stage pool 2 images x 2 x 2 positions: dividing by such small
    # variances amplifies float32 rounding, hence a looser tolerance than for eval mode.
    np.testing.assert_allclose(np.asarray(ours), reference, atol=2e-3, rtol=2e-3)
    torch_mean = reference_model.embedder.embedder.normalization.running_mean.numpy()
    ours_mean = np.asarray(updated["batch_stats"]["stem_bn"]["mean"])
    np.testing.assert_allclose(ours_mean, torch_mean, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- torchvision


@pytest.fixture(scope="module")
def torchvision_model(torchvision):
    """torchvision's own resnet50, random weights and measured BatchNorm statistics, fc kept."""
    import torch

    torch.manual_seed(2)
    model = torchvision.models.resnet50(weights=None)
    assert type(model).__module__ == "torchvision.models.resnet"
    _randomise_batchnorm(model, seed=3)
    return model


@pytest.fixture(scope="module")
def torchvision_files(torchvision_model, tmp_path_factory):
    """Its state dict, classifier included, as torch.save and as safetensors write it."""
    import torch
    from safetensors.torch import save_file

    directory = tmp_path_factory.mktemp("torchvision-resnet")
    state = torchvision_model.state_dict()
    assert "fc.weight" in state and "layer1.0.downsample.0.weight" in state
    torch.save(state, directory / "resnet50.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, directory / "resnet50.safetensors")
    return directory


@pytest.fixture(scope="module")
def torchvision_trunk(torchvision_model):
    """The same model with fc = Identity: its output is the pooled 2048-d feature."""
    import torch

    trunk = copy.deepcopy(torchvision_model)
    trunk.fc = torch.nn.Identity()
    return trunk.eval()


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_torchvision_state_dict_imports_exactly(
    torchvision_trunk, torchvision_files, images, suffix, precision
):
    path = torchvision_files / f"resnet50{suffix}"
    variables, identity = resolve_resnet50_weights(path)
    assert identity.startswith(f"torchvision:{path.resolve()}@sha256:")
    ours = _flax_pooled(variables, images, precision)
    _assert_matches(ours, _torch_pooled(torchvision_trunk, images, precision), precision)


def _hf_to_torchvision_key(key: str) -> str:
    """The published HF <-> torchvision ResNet key correspondence (transformers' convert script)."""
    key = key.replace("embedder.embedder.convolution", "conv1")
    key = key.replace("embedder.embedder.normalization", "bn1")

    def block(match: re.Match) -> str:
        stage, index, rest = int(match.group(1)), match.group(2), match.group(3)
        rest = re.sub(r"layer\.(\d)\.convolution", lambda m: f"conv{int(m.group(1)) + 1}", rest)
        rest = re.sub(r"layer\.(\d)\.normalization", lambda m: f"bn{int(m.group(1)) + 1}", rest)
        rest = rest.replace("shortcut.convolution", "downsample.0")
        rest = rest.replace("shortcut.normalization", "downsample.1")
        return f"layer{stage + 1}.{index}.{rest}"

    return re.sub(r"encoder\.stages\.(\d)\.layers\.(\d+)\.(.*)", block, key)


def test_torchvision_layout_of_hf_weights_imports_the_same(hf_model, hf_dir, tmp_path):
    """Without torchvision too: HF weights renamed to torchvision keys load to the same tensors."""
    import torch

    state = {_hf_to_torchvision_key(k): v for k, v in hf_model.state_dict().items()}
    assert "layer4.2.bn3.running_var" in state and "layer1.0.downsample.0.weight" in state
    torch.save(state, tmp_path / "renamed.pth")
    ours = load_resnet50_weights(tmp_path / "renamed.pth")
    jax.tree_util.tree_map(np.testing.assert_array_equal, ours, load_resnet50_weights(hf_dir))


# ----------------------------------------------------------------------------- errors, identity


def _torchvision_file(hf_model, tmp_path, edit) -> str:
    import torch

    state = {_hf_to_torchvision_key(k): v for k, v in hf_model.state_dict().items()}
    edit(state)
    path = tmp_path / "edited.pth"
    torch.save(state, path)
    return str(path)


def test_missing_mismatched_and_unexpected_tensors_are_listed(hf_model, tmp_path):
    import torch

    def edit(state):
        del state["layer3.4.bn2.running_var"]
        state["layer1.0.conv2.weight"] = torch.zeros(64, 64, 1, 1)
        state["layer5.0.conv1.weight"] = torch.zeros(1)

    with pytest.raises(WeightsMismatchError) as info:
        load_resnet50_weights(_torchvision_file(hf_model, tmp_path, edit))
    message = str(info.value)
    assert "edited.pth" in message
    assert "missing" in message and "layer3.4.bn2.running_var" in message
    assert "wrong shape" in message and "layer1.0.conv2.weight" in message
    assert "unexpected" in message and "layer5.0.conv1.weight" in message


def test_non_resnet_file_is_refused(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "other.safetensors"
    save_file({"encoder.weight": np.zeros((2, 2), np.float32)}, str(path))
    with pytest.raises(WeightsMismatchError, match="other.safetensors"):
        load_resnet50_weights(path)


def test_wrong_architecture_config_is_refused(hf_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(hf_dir, bad)
    config = json.loads((bad / "config.json").read_text())
    config["depths"] = [2, 2, 2, 2]
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="depths"):
        load_resnet50_weights(bad)


def test_missing_local_path_says_how_to_provide_weights(tmp_path):
    with pytest.raises(WeightsNotFoundError) as info:
        load_resnet50_weights(tmp_path / "nowhere.pth")
    assert "--weights random" in str(info.value) and "config.json" in str(info.value)


def test_offline_hub_without_cache_says_how_to_provide_weights(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError) as info:
        load_resnet50_weights("microsoft/resnet-50", cache_dir=str(tmp_path))
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message and "--weights random" in message
    assert "torchvision" in message


def test_offline_hub_reads_the_cache_and_records_the_commit(hf_dir, images, tmp_path, monkeypatch):
    """The hub cache layout (refs/main -> snapshots/<commit>/) as huggingface_hub writes it."""
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--microsoft--resnet-50"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(hf_dir, repo / "snapshots" / commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    variables, identity = resolve_resnet50_weights("microsoft/resnet-50", cache_dir=str(tmp_path))
    assert identity == f"microsoft/resnet-50@{commit}"
    jax.tree_util.tree_map(np.testing.assert_array_equal, variables, load_resnet50_weights(hf_dir))


def test_random_weights_are_explicit_and_loud():
    with pytest.raises(ValueError, match="init_resnet50_variables"):
        load_resnet50_weights("random")
    variables, identity = resolve_resnet50_weights("random:3")
    assert identity == "random(seed=3)"
    again = init_resnet50_variables(3)
    jax.tree_util.tree_map(np.testing.assert_array_equal, variables, again)
    assert "RANDOM BACKBONE WEIGHTS" in random_weights_warning(identity)
    assert random_weights_warning("microsoft/resnet-50@abc") is None
    other = init_resnet50_variables(4)
    assert not np.array_equal(
        other["params"]["stem_conv"]["kernel"], again["params"]["stem_conv"]["kernel"]
    )
