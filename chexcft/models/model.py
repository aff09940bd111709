"""ChexModel: normalisation + backbone (features) + one linear head laid out by HeadLayout."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from chexcft.models.architectures import InputNormalization, input_channels
from chexcft.models.layout import HeadLayout

OVERRIDE_PREFIX = "binary_override."


class ChexModel(nn.Module):
    """Chest X-ray classifier: x (N, 1, H, W) in [0, 1] -> raw head logits; features and head are separate parts."""

    def __init__(
        self, arch: str, backbone: nn.Module, feature_dim: int, layout: HeadLayout, normalization: str, init: str
    ) -> None:
        super().__init__()
        self.arch = arch
        self.layout = layout
        self.feature_dim = int(feature_dim)
        self.init = init
        self.normalize = InputNormalization(normalization)
        self.backbone = backbone
        self.head = nn.Linear(self.feature_dim, layout.width)
        self.binary_override: nn.Linear | None = None

    @property
    def normalization(self) -> str:
        """Input normalisation name (centered, imagenet or xrv)."""
        return self.normalize.kind

    @property
    def target_layer(self) -> nn.Module:
        """The last convolutional stage (for Grad-CAM)."""
        return self.backbone.features

    def spec(self) -> dict[str, Any]:
        """Everything needed to rebuild this model without its pretrained weights file."""
        return {
            "arch": self.arch,
            "feature_dim": self.feature_dim,
            "normalization": self.normalization,
            "in_channels": input_channels(self.normalization),
            "init": self.init,
            "layout": self.layout.to_dict(),
        }

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features (N, d)."""
        return self.backbone(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw head outputs (N, layout.width) of the trained head (never the CFT override)."""
        return self.head(self.features(x))

    def binary_logits_from_features(self, z: torch.Tensor, *, use_override: bool = True) -> torch.Tensor:
        """(N, d) features -> (N, C) binary logits (multiclass: l_pos - l_neg); the CFT head when set."""
        if use_override and self.binary_override is not None:
            return self.binary_override(z)
        return self.layout.binary_logits(self.head(z))

    def predict_logits(self, x: torch.Tensor, *, use_override: bool = True) -> torch.Tensor:
        """(N, 1, H, W) images -> (N, C) binary logits."""
        return self.binary_logits_from_features(self.features(x), use_override=use_override)

    def effective_binary_head(self, *, use_override: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(W (C, d), b (C,)) such that binary logits = z @ W.T + b (detached copies)."""
        if use_override and self.binary_override is not None:
            return self.binary_override.weight.detach().clone(), self.binary_override.bias.detach().clone()
        weight, bias = self.head.weight.detach(), self.head.bias.detach()
        pos, neg = self.layout.positive_rows(), self.layout.negative_rows()
        w, b = weight[pos].clone(), bias[pos].clone()
        is_mc = neg >= 0
        if is_mc.any():
            w[is_mc] -= weight[neg[is_mc]]
            b[is_mc] -= bias[neg[is_mc]]
        return w, b

    def set_binary_head(self, weight: torch.Tensor | np.ndarray, bias: torch.Tensor | np.ndarray) -> None:
        """Use a plain Linear(d, C) with this weight and bias for binary logits from now on (CFT override)."""
        weight = torch.as_tensor(np.asarray(weight) if not isinstance(weight, torch.Tensor) else weight)
        bias = torch.as_tensor(np.asarray(bias) if not isinstance(bias, torch.Tensor) else bias)
        n_obs = self.layout.num_observations
        if tuple(weight.shape) != (n_obs, self.feature_dim) or tuple(bias.shape) != (n_obs,):
            raise ValueError(
                f"binary head must be weight ({n_obs}, {self.feature_dim}) and bias ({n_obs},), "
                f"got {tuple(weight.shape)} and {tuple(bias.shape)}"
            )
        ref = self.head.weight
        linear = nn.Linear(self.feature_dim, n_obs).to(device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            linear.weight.copy_(weight.to(ref.dtype))
            linear.bias.copy_(bias.to(ref.dtype))
        linear.requires_grad_(False)
        self.binary_override = linear

    def clear_binary_head(self) -> None:
        """Drop the CFT override: binary logits come from the trained head again."""
        self.binary_override = None

    def base_state_dict(self) -> dict[str, torch.Tensor]:
        """State dict of the backbone and trained head only (no CFT override), contiguous CPU copies."""
        return {
            key: value.detach().cpu().contiguous().clone()
            for key, value in self.state_dict().items()
            if not key.startswith(OVERRIDE_PREFIX)
        }
