"""build_model: architecture + input normalisation + initial weights, seeded and without downloads."""

from __future__ import annotations

import torch

from chexcft.errors import ChexcftError, InvalidWeightsError
from chexcft.models.architectures import ARCHITECTURES, FEATURE_DIMS, NORMALIZATIONS, input_channels, make_backbone
from chexcft.models.layout import HeadLayout
from chexcft.models.model import ChexModel
from chexcft.models.weights import Pretrained, load_file, load_imagenet, load_xrv, parse_init
from chexcft.schema import OBSERVATIONS


def load_pretrained(init: str, arch: str) -> Pretrained | None:
    """Read the weights an init string names (None for random); raises before any model is built."""
    kind, argument = parse_init(init)
    if kind == "random":
        return None
    if arch == "tiny" and kind in ("imagenet", "xrv"):
        raise ChexcftError(f"init {init!r} has no weights for arch 'tiny' (use random or file:)")
    if kind == "imagenet":
        return load_imagenet(arch)
    if kind == "xrv":
        return load_xrv(argument or "", arch)
    return load_file(argument or "")


def _check_backbone(model: ChexModel, backbone: dict[str, torch.Tensor], source: str) -> None:
    expected = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    missing = sorted(set(expected) - set(backbone))
    unexpected = sorted(set(backbone) - set(expected))
    wrong = sorted(k for k in set(expected) & set(backbone) if tuple(expected[k].shape) != tuple(backbone[k].shape))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s) e.g. {missing[:3]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) e.g. {unexpected[:3]}")
    if wrong:
        k = wrong[0]
        problems.append(
            f"{len(wrong)} shape mismatch(es) e.g. {k}: file {tuple(backbone[k].shape)} vs model {tuple(expected[k].shape)}"
        )
    if problems:
        raise InvalidWeightsError(f"{source}: weights do not fit {model.arch} ({'; '.join(problems)})")


def _apply_head(model: ChexModel, pretrained: Pretrained) -> None:
    layout = model.layout
    with torch.no_grad():
        spec_layout = HeadLayout.from_dict(pretrained.spec["layout"]) if pretrained.spec else None
        if pretrained.raw_head is not None and (spec_layout is None or spec_layout == layout):
            weight, bias = pretrained.raw_head
            if tuple(weight.shape) != tuple(model.head.weight.shape) or tuple(bias.shape) != tuple(model.head.bias.shape):
                raise InvalidWeightsError(
                    f"{pretrained.source}: head is {tuple(weight.shape)} but the model needs "
                    f"{tuple(model.head.weight.shape)} (give the file chexcft metadata to map rows by observation)"
                )
            model.head.weight.copy_(weight)
            model.head.bias.copy_(bias)
            return
        if pretrained.head_weight is None or pretrained.head_bias is None:
            return
        if pretrained.head_weight.shape[1] != model.feature_dim:
            raise InvalidWeightsError(f"{pretrained.source}: head rows have {pretrained.head_weight.shape[1]} inputs")
        for index, name in enumerate(pretrained.head_names):
            if name not in layout.observations:
                continue
            rows = layout.rows(name)
            w, b = pretrained.head_weight[index], pretrained.head_bias[index]
            if len(rows) == 1:
                model.head.weight[rows[0]] = w
                model.head.bias[rows[0]] = b
            else:  # neg row 0, pos row = the binary row: P(pos) over {neg, pos} = sigmoid(w.z + b)
                model.head.weight[rows[0]] = 0.0
                model.head.bias[rows[0]] = 0.0
                model.head.weight[rows[1]] = w
                model.head.bias[rows[1]] = b


def build_model(
    arch: str = "densenet121",
    layout: HeadLayout | None = None,
    init: str = "random",
    *,
    normalization: str | None = None,
    seed: int = 0,
) -> ChexModel:
    """Build a ChexModel: random, imagenet, xrv:<name> or file:<path.safetensors> init; never downloads."""
    if arch not in ARCHITECTURES:
        raise ChexcftError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")
    layout = layout or HeadLayout(OBSERVATIONS)
    pretrained = load_pretrained(init, arch)
    if pretrained is not None and pretrained.spec is not None and pretrained.spec.get("arch") != arch:
        raise InvalidWeightsError(f"{pretrained.source}: weights are for arch {pretrained.spec.get('arch')!r}, not {arch!r}")
    norm = normalization or (pretrained.normalization if pretrained is not None else "centered")
    if norm not in NORMALIZATIONS:
        raise ChexcftError(f"unknown input normalisation {norm!r}; expected one of {', '.join(NORMALIZATIONS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = make_backbone(arch, input_channels(norm))
        model = ChexModel(arch, backbone, FEATURE_DIMS[arch], layout, norm, init)
    if pretrained is not None:
        _check_backbone(model, pretrained.backbone, pretrained.source)
        model.load_state_dict(pretrained.backbone, strict=False)
        _apply_head(model, pretrained)
    return model


def reset_head(model: ChexModel, seed: int = 0) -> None:
    """Re-initialise the classification head (seeded), keeping the backbone: the second stage of a two-stage recipe."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.head.reset_parameters()
