"""Pretrained weights from local caches only (never downloaded), loaded without executing pickled code."""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from chexcft.errors import ChexcftError, InvalidWeightsError, MissingWeightsError

XRV_CACHE_ENV = "CHEXCFT_XRV_CACHE"
# xrv names its 18 output slots NIH-style; only these differ from our observation names.
XRV_NAME_ALIASES: dict[str, str] = {"Effusion": "Pleural Effusion"}
METADATA_KEY = "chexcft_model"
# torchvision's old DenseNet checkpoints name layers "norm.1" where the module is now "norm1".
_OLD_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


@dataclass(frozen=True)
class Pretrained:
    """Weights to put into a fresh model: backbone tensors (our key names) and optional named head rows."""

    source: str
    normalization: str
    backbone: dict[str, torch.Tensor]
    head_weight: torch.Tensor | None = None  # (K, d) rows named by head_names (binary logits)
    head_bias: torch.Tensor | None = None
    head_names: tuple[str, ...] = ()
    spec: dict[str, Any] | None = None  # chexcft model spec when the file carries one
    raw_head: tuple[torch.Tensor, torch.Tensor] | None = None  # the file's head as stored (layout of spec)


def parse_init(init: str) -> tuple[str, str | None]:
    """Split an init string into (kind, argument): random, imagenet, xrv:<name>, file:<path>."""
    init = (init or "random").strip()
    if init in ("random", "imagenet"):
        return init, None
    for prefix in ("xrv:", "file:"):
        if init.startswith(prefix) and init[len(prefix):].strip():
            return prefix[:-1], init[len(prefix):].strip()
    raise ChexcftError(
        f"unknown init {init!r}; expected random, imagenet, xrv:<weights name> (e.g. xrv:densenet121-res224-chex) "
        "or file:<path.safetensors>"
    )


def imagenet_weights_file(arch: str = "densenet121") -> tuple[Path, str]:
    """(expected local path, download URL) of torchvision's ImageNet weights in the torch hub cache."""
    if arch != "densenet121":
        raise ChexcftError(f"no ImageNet weights for architecture {arch!r} (only densenet121)")
    from torchvision.models import DenseNet121_Weights

    url = DenseNet121_Weights.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url), url


def xrv_cache_dir() -> Path:
    """torchxrayvision's weights folder (~/.torchxrayvision/models_data, or $CHEXCFT_XRV_CACHE)."""
    override = os.environ.get(XRV_CACHE_ENV)
    return Path(override) if override else Path(os.path.expanduser(os.path.join("~", ".torchxrayvision", "models_data")))


def xrv_weight_names() -> tuple[str, ...]:
    """The torchxrayvision DenseNet121 weight names chexcft can load."""
    from torchxrayvision.models import model_urls

    return tuple(sorted(name for name in model_urls if name.startswith("densenet121")))


def xrv_weights_file(name: str) -> tuple[Path, str, tuple[str, ...]]:
    """(expected local path, download URL, 18 output names) of a torchxrayvision DenseNet weight name."""
    from torchxrayvision.models import model_urls

    if name not in xrv_weight_names():
        raise ChexcftError(f"unknown torchxrayvision weights {name!r}; expected one of {', '.join(xrv_weight_names())}")
    entry = model_urls[name]
    url = entry["weights_url"]
    return xrv_cache_dir() / os.path.basename(url), url, tuple(entry["labels"])


def xrv_converted_file(name: str) -> Path:
    """Where a safetensors conversion of a torchxrayvision weights file is looked for first (beside the .pt)."""
    path, _, _ = xrv_weights_file(name)
    return path.with_suffix(".safetensors")


def _xrv_conversion_hint(name: str, converted: Path) -> str:
    # xrv's release files are whole-model pickles in PyTorch's legacy format, which weights_only cannot read.
    return (
        "torchxrayvision's release files are whole-model pickles (often in PyTorch's legacy format) that cannot be "
        "read without running pickled code; if you trust your copy, convert it once to safetensors and chexcft uses "
        f"that instead: python -c \"import torchxrayvision as xrv; from safetensors.torch import save_file; "
        f"m = xrv.models.DenseNet(weights='{name}'); "
        f"save_file({{k: v.contiguous() for k, v in m.state_dict().items()}}, '{converted}')\""
    )


def require_file(path: Path, url: str | None, what: str) -> Path:
    """Return path if it is a non-empty file, else raise MissingWeightsError saying which file to put where."""
    where = f"download {url} and save it as {path}" if url else f"put the file at {path}"
    if not path.is_file():
        raise MissingWeightsError(
            f"{what} weights not found: expected the file {path.name} in the folder {path.parent} "
            f"(chexcft never downloads; {where})"
        )
    if path.stat().st_size == 0:
        raise MissingWeightsError(
            f"{what} weights file {path} is empty (0 bytes), probably left by a failed download: delete it and "
            f"replace it with the complete file ({where})"
        )
    return path


def _xrv_module_classes() -> list[type]:
    from torch import nn
    from torchxrayvision import models as xrv_models

    return [
        xrv_models.DenseNet, xrv_models._DenseLayer, xrv_models._DenseBlock, xrv_models._Transition,
        nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Sequential, nn.Linear, set,
    ]  # fmt: skip


def _unpickling_reason(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if re.search(r"Unsupported|Only persistent|not allowed|Unknown|unsupported|Trying to load", line):
            return line.replace("WeightsUnpickler error: ", "")
    return lines[0] if lines else type(exc).__name__


def safe_torch_load(path: Path, *, allowed_classes: Iterable[type] = ()) -> Any:
    """torch.load with weights_only=True (plus an explicit class allow-list); anything else is refused."""
    allowed = list(allowed_classes)
    try:
        if allowed:
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError, OSError) as exc:
        reason = _unpickling_reason(exc)
        raise InvalidWeightsError(
            f"{path}: refused to load (only tensors and known layer types are accepted, never pickled code): {reason}"
        ) from None


def _module_tensors(module: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    # Walk the raw attribute dicts rather than calling state_dict(): no hooks of an unpickled object run.
    state = vars(module)
    out: dict[str, torch.Tensor] = {}
    for key in ("_parameters", "_buffers"):
        for name, value in (state.get(key) or {}).items():
            if isinstance(value, torch.Tensor):
                out[prefix + name] = value.detach()
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            out.update(_module_tensors(child, f"{prefix}{name}."))
    return out


def tensors_from_checkpoint(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Flat {name: tensor} from a loaded checkpoint: a state dict, {"state_dict": ...} or a whole module."""
    if isinstance(obj, torch.nn.Module):
        return _module_tensors(obj)
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                return tensors_from_checkpoint(obj[key], path)
        tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return {k[len("module."):] if k.startswith("module.") else k: v for k, v in tensors.items()}
    raise InvalidWeightsError(f"{path}: holds no weights (expected a state dict of tensors)")


def densenet_keys_to_backbone(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision/xrv DenseNet keys ("features.*", old "norm.1" style too) -> our "backbone.features.*" keys."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = _OLD_DENSENET_KEY.match(key)
        if match:
            key = match.group(1) + match.group(2)
        if key.startswith("features."):
            out["backbone." + key] = value
    return out


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; a corrupt file gives InvalidWeightsError naming it."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except FileNotFoundError:
        raise
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise InvalidWeightsError(f"{path}: not a valid safetensors file ({exc})") from None
    return tensors, metadata


def model_spec_from_metadata(metadata: Mapping[str, str], path: Path) -> dict[str, Any] | None:
    """The chexcft model spec stored in a weights file's metadata (None when absent)."""
    if METADATA_KEY not in metadata:
        return None
    try:
        spec = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise InvalidWeightsError(f"{path}: model metadata is not valid JSON ({exc})") from None
    if not isinstance(spec, dict) or "arch" not in spec or "layout" not in spec:
        raise InvalidWeightsError(f"{path}: model metadata lacks arch or layout")
    return spec


def load_imagenet(arch: str) -> Pretrained:
    """torchvision ImageNet DenseNet121 weights from the torch hub cache (classifier dropped)."""
    path, url = imagenet_weights_file(arch)
    require_file(path, url, "ImageNet")
    state = tensors_from_checkpoint(safe_torch_load(path), path)
    return Pretrained(f"imagenet:{path}", "imagenet", densenet_keys_to_backbone(state))


def load_xrv(name: str, arch: str) -> Pretrained:
    """torchxrayvision DenseNet121 weights from its cache folder, with its classifier rows named by observation."""
    if arch != "densenet121":
        raise ChexcftError(f"torchxrayvision weights fit densenet121 only, not {arch!r}")
    path, url, labels = xrv_weights_file(name)
    converted = xrv_converted_file(name)
    if converted.is_file() and converted.stat().st_size > 0:
        state = read_safetensors(converted)[0]
        path = converted
    else:
        try:
            require_file(path, url, f"torchxrayvision {name}")
        except MissingWeightsError as exc:
            raise MissingWeightsError(f"{exc}; a safetensors conversion saved as {converted} is used too") from None
        try:
            state = tensors_from_checkpoint(safe_torch_load(path, allowed_classes=_xrv_module_classes()), path)
        except InvalidWeightsError as exc:
            raise InvalidWeightsError(f"{exc}. {_xrv_conversion_hint(name, converted)}") from None
    weight, bias = state.get("classifier.weight"), state.get("classifier.bias")
    names: list[str] = []
    rows: list[int] = []
    if weight is not None and bias is not None and weight.shape[0] == len(labels) == bias.shape[0]:
        for row, label in enumerate(labels):
            if label:  # empty slots were never trained
                names.append(XRV_NAME_ALIASES.get(label, label))
                rows.append(row)
    head_w = weight[rows] if rows else None
    head_b = bias[rows] if rows else None
    return Pretrained(f"xrv:{name}:{path}", "xrv", densenet_keys_to_backbone(state), head_w, head_b, tuple(names))


def load_file(path_text: str) -> Pretrained:
    """A local safetensors file: chexcft weights (backbone.*, head.*) or a torchvision-style DenseNet (features.*)."""
    path = Path(path_text).expanduser()
    if path.suffix != ".safetensors":
        raise InvalidWeightsError(f"{path}: init files must be .safetensors (pickled checkpoints are not loaded)")
    require_file(path, None, "local")
    tensors, metadata = read_safetensors(path)
    spec = model_spec_from_metadata(metadata, path)
    ours = any(key.startswith("backbone.") for key in tensors)
    if ours:
        backbone = {k: v for k, v in tensors.items() if k.startswith("backbone.")}
    else:
        backbone = densenet_keys_to_backbone(tensors)
    if not backbone:
        raise InvalidWeightsError(f"{path}: no backbone weights (expected keys backbone.* or features.*)")
    conv_in = next((v.shape[1] for k, v in backbone.items() if v.ndim == 4), 1)
    # Without metadata: a 3-channel DenseNet is torchvision's (ImageNet), a 1-channel one torchxrayvision's.
    fallback = "imagenet" if conv_in == 3 else ("centered" if ours else "xrv")
    normalization = (spec or {}).get("normalization") or fallback
    head_w = head_b = raw_head = None
    names: tuple[str, ...] = ()
    if "head.weight" in tensors and "head.bias" in tensors:
        head_w, head_b = tensors["head.weight"], tensors["head.bias"]
        raw_head = (head_w, head_b)
        if spec is None:
            head_w = head_b = None
        else:
            from chexcft.models.layout import HeadLayout

            layout = HeadLayout.from_dict(spec["layout"])
            if head_w.shape[0] != layout.width:
                raise InvalidWeightsError(
                    f"{path}: head.weight has {head_w.shape[0]} rows but its metadata layout needs {layout.width}"
                )
            # Named binary rows: the file's effective binary head.
            pos, neg = layout.positive_rows(), layout.negative_rows()
            w, b = head_w[pos].clone(), head_b[pos].clone()
            mc = neg >= 0
            w[mc] -= head_w[neg[mc]]
            b[mc] -= head_b[neg[mc]]
            head_w, head_b, names = w, b, layout.observations
    return Pretrained(f"file:{path}", normalization, backbone, head_w, head_b, names, spec, raw_head)
