"""Import ResNet-50 weights from Hugging Face or torchvision checkpoints into the Flax backbone.

Sources, in the order they are recognised:
  "random", "random:N", "random(seed=N)"   untrained weights (only through `resolve_resnet50_weights`)
  an existing directory                     Hugging Face layout: config.json + model.safetensors
                                            (or its sharded index, or pytorch_model.bin)
  an existing file                          a state dict (.safetensors, .pth, .pt, .bin), either
                                            torchvision's resnet50 keys or Hugging Face's
  anything else                             a hub id, "microsoft/resnet-50" or "org/name@revision",
                                            through huggingface_hub (honours HF_HUB_OFFLINE, cache;
                                            a hub that does not answer one short request: the
                                            cache only, so no minute of retries)

Every tensor of the backbone must be present with the right shape; classifier tensors (fc.*,
classifier.*) and num_batches_tracked are ignored. Anything else is an error that lists it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from qcxr.models.resnet import STAGE_DEPTHS, STAGE_WIDTHS, block_name, variable_shapes

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
RANDOM_PATTERN = re.compile(r"^random(?::(\d+)|\(seed=(\d+)\))?$")
HUB_ID_PATTERN = re.compile(r"^[\w.-]+(/[\w.-]+)?(@[\w./-]+)?$")

HUB_PROBE_TIMEOUT_S = 5.0  # one HEAD request to the hub before any download (hub_unreachable)

HOW_TO_PROVIDE = (
    "Provide ResNet-50 weights in one of these ways:\n"
    "  1. on a machine with network access, `hf download microsoft/resnet-50` and copy the cache\n"
    "     ($HF_HOME, default ~/.cache/huggingface) here; or point --weights at that snapshot dir;\n"
    "  2. --weights DIR, a Hugging Face directory with config.json and model.safetensors\n"
    "     (or pytorch_model.bin);\n"
    "  3. --weights FILE, a torchvision resnet50 state dict (e.g. resnet50-11ad3fa6.pth or\n"
    "     .safetensors);\n"
    "  4. --weights random, an untrained backbone: results are NOT comparable to the paper."
)

# What microsoft/resnet-50's config.json must say for these weights to fit this architecture.
EXPECTED_HF_CONFIG = {
    "layer_type": "bottleneck",
    "depths": list(STAGE_DEPTHS),
    "hidden_sizes": [w * 4 for w in STAGE_WIDTHS],
    "embedding_size": 64,
    "num_channels": 3,
    "hidden_act": "relu",
    "downsample_in_first_stage": False,
    "downsample_in_bottleneck": False,  # False = v1.5, stride on the 3x3 convolution
}


class WeightsNotFoundError(FileNotFoundError):
    """No weights could be obtained from the given source."""


class WeightsMismatchError(ValueError):
    """A checkpoint lacks backbone tensors, has wrong shapes, or holds unknown tensors."""


# ----------------------------------------------------------------------------- public API


def load_resnet50_weights(source: str | os.PathLike, *, cache_dir: str | None = None) -> dict:
    """{"params", "batch_stats"} for `resnet50()` from a hub id, HF directory or state-dict file."""
    variables, _ = _load(source, cache_dir)
    return variables


def resolve_resnet50_weights(
    source: str | os.PathLike, *, cache_dir: str | None = None
) -> tuple[dict, str]:
    """(variables, identity): like `load_resnet50_weights`, also accepting "random[:seed]".

    The identity names exactly what was loaded: "org/name@<commit>", "<kind>:<path>@sha256:<hex>"
    or "random(seed=N)".
    """
    seed = random_seed(str(source))
    if seed is not None:
        from qcxr.models.resnet import init_resnet50_variables

        return init_resnet50_variables(seed), f"random(seed={seed})"
    return _load(source, cache_dir)


def random_seed(source: str) -> int | None:
    """The seed of a "random", "random:N" or "random(seed=N)" source (0 if none); None otherwise."""
    match = RANDOM_PATTERN.match(source.strip())
    if not match:
        return None
    return int(match.group(1) or match.group(2) or 0)


def is_random_identity(identity: str) -> bool:
    return identity.startswith("random")


def random_weights_warning(identity: str) -> str | None:
    """A loud banner to print wherever results made with random backbone weights are reported."""
    if not is_random_identity(identity):
        return None
    line = "!" * 78
    return (
        f"{line}\n!! WARNING: RANDOM BACKBONE WEIGHTS ({identity}), not ImageNet-pretrained.\n"
        f"!! Features and results are NOT comparable to the paper.\n{line}"
    )


# ----------------------------------------------------------------------------- dispatch


def _load(source: str | os.PathLike, cache_dir: str | None) -> tuple[dict, str]:
    text = str(source)
    if random_seed(text) is not None:
        raise ValueError(
            f"{text!r} asks for random weights; call init_resnet50_variables(seed) or "
            "resolve_resnet50_weights, so that the choice is explicit and recorded"
        )
    path = Path(text).expanduser()
    if path.is_dir():
        return _from_hf_dir(path)
    if path.is_file():
        state = read_state_dict(path)
        kind = "hf" if _layout(state, path) == "hf" else "torchvision"
        return variables_from_state_dict(state, where=str(path)), _file_identity(kind, path)
    if _looks_like_path(text):
        raise WeightsNotFoundError(f"{path}: no such file or directory.\n{HOW_TO_PROVIDE}")
    return _from_hub(text, cache_dir)


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith((".", "/", "~"))
        or text.endswith((".safetensors", *TORCH_SUFFIXES))
        or not HUB_ID_PATTERN.match(text)
    )


def _from_hf_dir(directory: Path) -> tuple[dict, str]:
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise WeightsNotFoundError(
            f"{directory}: not a Hugging Face model directory (no config.json).\n{HOW_TO_PROVIDE}"
        )
    check_hf_config(config_path)
    files = _hf_weight_files(directory)
    state: dict[str, np.ndarray] = {}
    for file in files:
        state.update(read_state_dict(file))
    variables = variables_from_state_dict(state, where=str(directory))
    return variables, _file_identity("hf", *files)


def _hf_weight_files(directory: Path) -> list[Path]:
    single = directory / "model.safetensors"
    if single.is_file():
        return [single]
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [directory / shard for shard in shards]
    legacy = directory / "pytorch_model.bin"
    if legacy.is_file():
        return [legacy]
    raise WeightsNotFoundError(
        f"{directory}: has config.json but no model.safetensors, model.safetensors.index.json "
        f"or pytorch_model.bin.\n{HOW_TO_PROVIDE}"
    )


def check_hf_config(config_path: Path) -> None:
    """Refuse a Hugging Face config whose architecture is not ResNet-50 v1.5."""
    config = json.loads(config_path.read_text())
    if config.get("model_type") not in (None, "resnet"):
        raise ValueError(f"{config_path}: model_type is {config['model_type']!r}, not 'resnet'")
    for key, expected in EXPECTED_HF_CONFIG.items():
        if key in config and config[key] != expected:
            raise ValueError(
                f"{config_path}: {key} = {config[key]!r}, but ResNet-50 v1.5 needs {expected!r}"
            )


def _offline() -> bool:
    # huggingface_hub reads HF_HUB_OFFLINE once at import; read it again so a late setting counts.
    import huggingface_hub

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return flag or huggingface_hub.is_offline_mode()


def hub_unreachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """Why the Hugging Face hub ($HF_ENDPOINT) cannot be reached, or None when it answers.

    One request without retries: unanswered, huggingface_hub retries every file for ~23 s.
    """
    from huggingface_hub import constants, get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception as err:  # noqa: BLE001 - any failure to get an answer (httpx's many types)
        return f"{constants.ENDPOINT} cannot be reached ({type(err).__name__}: {err})"
    return None


def _from_hub(source: str, cache_dir: str | None) -> tuple[dict, str]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo_id, _, revision = source.partition("@")
    offline = _offline()
    unreachable = None if offline else hub_unreachable()
    local_only = offline or unreachable is not None  # then the cache is all there is
    fetched: dict[str, Path] = {}
    failures = []
    for name in ("config.json", "model.safetensors", "pytorch_model.bin"):
        if name == "pytorch_model.bin" and "model.safetensors" in fetched:
            break
        try:
            fetched[name] = Path(
                hf_hub_download(
                    repo_id,
                    name,
                    revision=revision or None,
                    cache_dir=cache_dir,
                    local_files_only=local_only,
                )
            )
        except (EntryNotFoundError, OSError, ValueError) as err:
            cached_only = local_only and isinstance(err, LocalEntryNotFoundError)
            said = "not in the local cache" if cached_only else str(err).splitlines()[0]
            failures.append(f"{name}: {type(err).__name__}: {said}")
    weights = fetched.get("model.safetensors") or fetched.get("pytorch_model.bin")
    if "config.json" not in fetched or weights is None:
        why = "offline (HF_HUB_OFFLINE is set)" if offline else unreachable
        mode = f": {why}, and they are not in the local cache" if why else ""
        raise WeightsNotFoundError(
            f"could not obtain ResNet-50 weights {source!r} from the Hugging Face hub{mode}:\n  "
            + "\n  ".join(failures)
            + f"\n{HOW_TO_PROVIDE}"
        )
    check_hf_config(fetched["config.json"])
    variables = variables_from_state_dict(read_state_dict(weights), where=f"{source} ({weights})")
    # The cache stores files under snapshots/<commit>/: that commit pins what was loaded.
    commit = weights.parent.name if weights.parent.parent.name == "snapshots" else None
    return variables, f"{repo_id}@{commit or revision or 'main'}"


def _file_identity(kind: str, *files: Path) -> str:
    digest = hashlib.sha256()  # one digest over the files' bytes in turn
    for file in files:
        with open(file, "rb") as handle:
            hashlib.file_digest(handle, lambda: digest)
    where = files[0].resolve() if len(files) == 1 else files[0].resolve().parent
    return f"{kind}:{where}@sha256:{digest.hexdigest()}"


# ----------------------------------------------------------------------------- reading files


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """Name -> float32 array from a safetensors file or a torch file (weights_only=True)."""
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if path.suffix in TORCH_SUFFIXES:
        return _read_torch(path)
    raise ValueError(f"{path}: unknown weights format; expected .safetensors or .pth/.pt/.bin")


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            return {key: handle.get_tensor(key).astype(np.float32) for key in handle.keys()}  # noqa: SIM118 - not a dict
    except TypeError:  # bfloat16 tensors have no numpy dtype: read them through torch
        return _read_torch(path)
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None


def _read_torch(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise ValueError(
            f"{path}: reading a PyTorch file needs torch; install it, or convert the file to "
            "safetensors"
        ) from None
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch's unpickler raises many types
            raise ValueError(f"{path}: cannot be read as a PyTorch state dict ({err})") from None
    for wrapper in ("state_dict", "model"):  # training checkpoints nest the weights
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return {
        key: value.detach().to(torch.float32).numpy()
        for key, value in state.items()
        if isinstance(value, torch.Tensor)
    }


# ----------------------------------------------------------------------------- key mapping


def _layout(state: Mapping[str, np.ndarray], where: object) -> str:
    keys = [_strip(k, ("module.",)) for k in state]
    if any(k.startswith(("embedder.", "resnet.embedder.")) for k in keys):
        return "hf"
    if "conv1.weight" in keys:
        return "torchvision"
    raise WeightsMismatchError(
        f"{where}: neither a Hugging Face nor a torchvision ResNet-50 state dict "
        f"(first keys: {sorted(keys)[:5]})"
    )


def _strip(key: str, prefixes: tuple[str, ...]) -> str:
    for prefix in prefixes:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def module_map(layout: str) -> Iterator[tuple[tuple[str, ...], str]]:
    """(Flax module path, checkpoint module prefix) for every conv and BatchNorm of the trunk."""
    hf = layout == "hf"
    yield ("stem_conv",), "embedder.embedder.convolution" if hf else "conv1"
    yield ("stem_bn",), "embedder.embedder.normalization" if hf else "bn1"
    for stage, depth in enumerate(STAGE_DEPTHS):
        for block in range(depth):
            name = block_name(stage, block)
            hf_block = f"encoder.stages.{stage}.layers.{block}"
            tv_block = f"layer{stage + 1}.{block}"
            for i in (1, 2, 3):
                yield (
                    (name, f"conv{i}"),
                    (f"{hf_block}.layer.{i - 1}.convolution" if hf else f"{tv_block}.conv{i}"),
                )
                yield (
                    (name, f"bn{i}"),
                    (f"{hf_block}.layer.{i - 1}.normalization" if hf else f"{tv_block}.bn{i}"),
                )
            if block == 0:  # the first block of each stage projects its shortcut
                yield (
                    (name, "proj_conv"),
                    (f"{hf_block}.shortcut.convolution" if hf else f"{tv_block}.downsample.0"),
                )
                yield (
                    (name, "proj_bn"),
                    (f"{hf_block}.shortcut.normalization" if hf else f"{tv_block}.downsample.1"),
                )


# Flax leaf -> (collection, checkpoint suffix); torch convs are OIHW, Flax kernels HWIO.
CONV_LEAVES = {"kernel": ("params", "weight")}
BN_LEAVES = {
    "scale": ("params", "weight"),
    "bias": ("params", "bias"),
    "mean": ("batch_stats", "running_mean"),
    "var": ("batch_stats", "running_var"),
}


def variables_from_state_dict(state: Mapping[str, np.ndarray], *, where: str) -> dict:
    """Flax variables from a HF or torchvision state dict; every problem is listed in one error."""
    import jax.numpy as jnp

    layout = _layout(state, where)
    prefixes = ("module.", "resnet.") if layout == "hf" else ("module.",)
    ignored = ("classifier.",) if layout == "hf" else ("fc.",)
    tensors = {_strip(k, prefixes): v for k, v in state.items()}
    shapes = variable_shapes()
    variables: dict = {"params": {}, "batch_stats": {}}
    used, missing, mismatched = set(), [], []
    for path, prefix in module_map(layout):
        leaves = CONV_LEAVES if "conv" in path[-1] else BN_LEAVES
        for leaf, (collection, suffix) in leaves.items():
            key = f"{prefix}.{suffix}"
            expected = _get(shapes[collection], path)[leaf]
            if key not in tensors:
                missing.append(f"{key} (for {collection}/{'/'.join(path)}/{leaf} {expected})")
                continue
            used.add(key)
            value = np.asarray(tensors[key], dtype=np.float32)
            if value.ndim == 4:
                value = value.transpose(2, 3, 1, 0)
            if value.shape != expected:
                mismatched.append(f"{key}: shape {tuple(tensors[key].shape)}, expected {expected}")
                continue
            _set(variables[collection], path, leaf, jnp.asarray(value))
    unexpected = [
        k
        for k in tensors
        if k not in used and not k.startswith(ignored) and not k.endswith("num_batches_tracked")
    ]
    if missing or mismatched or unexpected:
        raise WeightsMismatchError(_mismatch_report(where, layout, missing, mismatched, unexpected))
    return variables


def _mismatch_report(
    where: str, layout: str, missing: list, mismatched: list, unexpected: list
) -> str:
    lines = [f"{where}: not a ResNet-50 v1.5 checkpoint in {layout} layout:"]
    for title, items in (
        ("missing", missing),
        ("wrong shape", mismatched),
        ("unexpected", sorted(unexpected)),
    ):
        if items:
            lines.append(f"  {len(items)} {title}:")
            lines += [f"    {item}" for item in items[:40]]
            if len(items) > 40:
                lines.append(f"    ... and {len(items) - 40} more")
    return "\n".join(lines)


def _get(tree: dict, path: tuple[str, ...]) -> dict:
    for name in path:
        tree = tree[name]
    return tree


def _set(tree: dict, path: tuple[str, ...], leaf: str, value: object) -> None:
    for name in path:
        tree = tree.setdefault(name, {})
    tree[leaf] = value
