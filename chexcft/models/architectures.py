"""Backbones (image -> pooled feature vector) and the input normalisation that matches each initialisation."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

ARCHITECTURES: tuple[str, ...] = ("densenet121", "tiny")
FEATURE_DIMS: dict[str, int] = {"densenet121": 1024, "tiny": 32}
# centered: 1 channel, 2x-1; imagenet: grey repeated to RGB, ImageNet mean/std; xrv: 1 channel in [-1024, 1024].
NORMALIZATIONS: tuple[str, ...] = ("centered", "imagenet", "xrv")
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def input_channels(normalization: str) -> int:
    """Channels the first convolution expects for a normalisation."""
    return 3 if normalization == "imagenet" else 1


class InputNormalization(nn.Module):
    """Map a grey image batch (N, 1, H, W) in [0, 1] to what the backbone's weights were trained on."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        if kind not in NORMALIZATIONS:
            raise ValueError(f"unknown input normalisation {kind!r}; expected one of {', '.join(NORMALIZATIONS)}")
        self.kind = kind
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise; x must be float (N, 1, H, W) in [0, 1]."""
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected a grey image batch of shape (N, 1, H, W), got {tuple(x.shape)}")
        if self.kind == "imagenet":
            return (x.expand(-1, 3, -1, -1) - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        if self.kind == "xrv":
            return (2.0 * x - 1.0) * 1024.0
        return 2.0 * x - 1.0

    def extra_repr(self) -> str:
        return self.kind


def _pooled(features: nn.Module) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            features=features,
            relu=nn.ReLU(inplace=False),
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(1),
        )
    )


def densenet121_backbone(in_channels: int) -> nn.Sequential:
    """torchvision DenseNet121 features + ReLU + global average pool + flatten (d = 1024), random init."""
    from torchvision.models import densenet121

    net = densenet121(weights=None)
    if in_channels != 3:
        conv = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(conv.weight)
        net.features.conv0 = conv
    return _pooled(net.features)


def tiny_backbone(in_channels: int) -> nn.Sequential:
    """A very small CNN (d = 32) for fast tests."""

    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

    layers = block(in_channels, 8) + block(8, 16) + block(16, 32)[:2]
    return _pooled(nn.Sequential(*layers))


def make_backbone(arch: str, in_channels: int) -> nn.Sequential:
    """Build an architecture's backbone with random weights."""
    if arch == "densenet121":
        return densenet121_backbone(in_channels)
    if arch == "tiny":
        return tiny_backbone(in_channels)
    raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")
