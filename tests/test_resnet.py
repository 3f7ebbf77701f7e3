"""The Flax ResNet-50 against PyTorch references: Hugging Face ResNetModel and torchvision resnet50.

References: transformers' PyTorch ResNetModel (random weights from ResNetConfig(), the
architecture of microsoft/resnet-50) and torchvision's own `resnet50()` when torchvision can be
imported (also a PyPI wheel whose C++ ops do not match the CPU torch, through its pure-Python
model module); without torchvision, the torchvision-format state dict is made from the HF model by
the published key correspondence and the Flax output is compared with the HF model's.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import sys
import types

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
    variables_from_state_dict,
)

PAPER_RESNET50_PARAMS = 23_508_032  # Table II: ResNet50 without its classifier
TOL = 1e-4


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
    nonzero everywhere and keep the activations of the random network near unit scale, so that an
    absolute tolerance of 1e-4 means the same thing for every reference.
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


def _torch_pooled(model, images_nchw: np.ndarray, float64: bool = False) -> np.ndarray:
    """Pooled features of a torch HF ResNetModel or torchvision resnet50 (fc removed), eval mode."""
    import copy

    import torch

    x = torch.from_numpy(images_nchw)
    if float64:
        model, x = copy.deepcopy(model).double(), x.double()
    with torch.no_grad():
        out = model(x)
    return getattr(out, "pooler_output", out).flatten(1).numpy()


def _flax_pooled(variables: dict, images_nchw: np.ndarray, float64: bool = False) -> np.ndarray:
    x = images_nchw.transpose(0, 2, 3, 1)
    if not float64:
        return np.asarray(resnet50().apply(variables, jnp.asarray(x), train=False))
    with jax.enable_x64(True):
        variables = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), variables)
        model = resnet50(dtype=jnp.float64)
        return np.asarray(model.apply(variables, jnp.asarray(x, jnp.float64), train=False))


def _assert_close(ours: np.ndarray, reference: np.ndarray, tol: float = TOL) -> None:
    """Within `tol` of the reference, relative to the feature scale (max |reference|, at least 1).

    Float32 rounding through 53 layers of a random network is itself about 4e-5 of the feature
    scale (torch float32 against torch float64); the float64 test shows the import is exact.
    """
    assert ours.shape == reference.shape
    scale = float(np.abs(reference).max())
    assert scale > 0.1  # a vanishing reference would make the check empty
    assert float(np.abs(ours - reference).max()) <= tol * max(1.0, scale)


@pytest.fixture(scope="module")
def hf_dir(hf_model, tmp_path_factory):
    directory = tmp_path_factory.mktemp("hf-resnet")
    hf_model.save_pretrained(directory)
    assert (directory / "model.safetensors").is_file()
    return directory


def test_hf_directory_imports_exactly(hf_model, hf_dir, images):
    variables = load_resnet50_weights(hf_dir)
    _assert_close(_flax_pooled(variables, images), _torch_pooled(hf_model, images))


@pytest.mark.slow
def test_hf_import_exact_at_224(hf_model, hf_dir):
    image = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    pooled = _flax_pooled(load_resnet50_weights(hf_dir), image)
    assert pooled.shape == (1, FEATURE_DIM)
    _assert_close(pooled, _torch_pooled(hf_model, image))


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
    import copy

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


def _torchvision_resnet50():
    """torchvision's resnet50 constructor, or None where torchvision is absent.

    A torchvision wheel built against another torch fails in its C++ ops ("operator
    torchvision::nms does not exist"); the model code is pure Python, so import it alone.
    """
    try:
        from torchvision.models import resnet50 as constructor

        return constructor
    except ImportError:
        return None
    except RuntimeError:
        pass
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] == "torchvision"}
    for name in saved:
        del sys.modules[name]
    spec = importlib.util.find_spec("torchvision")
    root = spec.submodule_search_locations[0]
    try:
        for name, sub in (("torchvision", ""), ("torchvision.models", "/models")):
            stub = types.ModuleType(name)
            stub.__path__ = [root + sub]
            sys.modules[name] = stub
        return importlib.import_module("torchvision.models.resnet").resnet50
    finally:
        for name in [k for k in sys.modules if k.split(".")[0] == "torchvision"]:
            del sys.modules[name]
        sys.modules.update(saved)


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


@pytest.fixture(scope="module")
def torchvision_reference(hf_model):
    """(state dict with fc, torch model giving pooled features, name of the reference)."""
    import torch

    constructor = _torchvision_resnet50()
    if constructor is not None:
        torch.manual_seed(2)
        model = constructor()
        _randomise_batchnorm(model, seed=3)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        model.fc = torch.nn.Identity()
        return state, model, "torchvision"
    state = {_hf_to_torchvision_key(k): v.clone() for k, v in hf_model.state_dict().items()}
    state["fc.weight"] = torch.randn(1000, FEATURE_DIM)
    state["fc.bias"] = torch.randn(1000)
    return state, hf_model, "transformers"


def test_torchvision_reference_is_known(torchvision_reference):
    state, _, name = torchvision_reference
    assert name in ("torchvision", "transformers")
    assert "layer4.2.bn3.running_var" in state and "layer1.0.downsample.0.weight" in state


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_torchvision_state_dict_imports_exactly(torchvision_reference, images, tmp_path, suffix):
    import torch
    from safetensors.torch import save_file

    state, reference, _ = torchvision_reference
    path = tmp_path / f"resnet50{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    variables, identity = resolve_resnet50_weights(path)
    assert identity.startswith(f"torchvision:{path.resolve()}@sha256:")
    _assert_close(_flax_pooled(variables, images), _torch_pooled(reference, images))


@pytest.mark.slow
def test_torchvision_import_is_exact_in_float64(torchvision_reference, images):
    """Without float32 rounding, both implementations agree to 1e-9: the mapping is exact."""
    state, reference, _ = torchvision_reference
    variables = load_resnet50_weights_from_state(state)
    ours = _flax_pooled(variables, images, float64=True)
    _assert_close(ours, _torch_pooled(reference, images, float64=True), tol=1e-9)


# ----------------------------------------------------------------------------- errors, identity


def load_resnet50_weights_from_state(state: dict) -> dict:
    return variables_from_state_dict({k: v.numpy() for k, v in state.items()}, where="test")


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
