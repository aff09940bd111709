"""Models: architectures, input normalisation, weight initialisation and the head layout."""

from __future__ import annotations

from chexcft.models.architectures import ARCHITECTURES, FEATURE_DIMS, NORMALIZATIONS, InputNormalization
from chexcft.models.build import build_model, load_pretrained
from chexcft.models.layout import HeadLayout
from chexcft.models.model import ChexModel
from chexcft.models.weights import (
    imagenet_weights_file,
    parse_init,
    safe_torch_load,
    xrv_cache_dir,
    xrv_weight_names,
    xrv_weights_file,
)

__all__ = [
    "ARCHITECTURES",
    "FEATURE_DIMS",
    "NORMALIZATIONS",
    "ChexModel",
    "HeadLayout",
    "InputNormalization",
    "build_model",
    "imagenet_weights_file",
    "load_pretrained",
    "parse_init",
    "safe_torch_load",
    "xrv_cache_dir",
    "xrv_weight_names",
    "xrv_weights_file",
]
