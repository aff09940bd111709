"""Models: head layout, normalisation, CFT head override, weight initialisation from local caches only."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from chexcft.errors import ChexcftError, InvalidWeightsError, MissingWeightsError
from chexcft.models import HeadLayout, InputNormalization, build_model, imagenet_weights_file, xrv_weights_file
from chexcft.schema import OBSERVATIONS

LAYOUT = HeadLayout(("Atelectasis", "Cardiomegaly", "Edema"), ("Cardiomegaly",))


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")} if folder.exists() else set()


@pytest.fixture()
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache (TORCH_HOME) under tmp_path."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture()
def xrv_home(tmp_path, monkeypatch) -> Path:
    """An empty home folder, so torchxrayvision's cache is tmp_path/home/.torchxrayvision/models_data."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("CHEXCFT_XRV_CACHE", raising=False)
    return home


class _Evil:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_layout_rows_and_width():
    assert LAYOUT.width == 5
    assert LAYOUT.rows("Atelectasis") == (0,) and LAYOUT.rows("Cardiomegaly") == (1, 2, 3) and LAYOUT.rows("Edema") == (4,)
    raw = torch.tensor([[0.5, 1.0, 3.0, -2.0, 7.0]])
    binary, classes = LAYOUT.split_logits(raw)
    torch.testing.assert_close(binary, torch.tensor([[0.5, 2.0, 7.0]]))
    torch.testing.assert_close(classes, torch.tensor([[[1.0, 3.0, -2.0]]]))
    assert HeadLayout.from_dict(LAYOUT.to_dict()) == LAYOUT
    with pytest.raises(ValueError):
        HeadLayout(("A",), ("B",))


def test_tiny_model_shapes_and_effective_head_reproduces_logits():
    model = build_model("tiny", LAYOUT, seed=1).eval()
    x = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    z = model.features(x)
    assert z.shape == (4, model.feature_dim) and 16 <= model.feature_dim <= 32
    raw = model(x)
    assert raw.shape == (4, LAYOUT.width)
    logits = model.predict_logits(x)
    weight, bias = model.effective_binary_head()
    torch.testing.assert_close(z @ weight.T + bias, logits, rtol=1e-5, atol=1e-5)
    # Multiclass: sigmoid(binary logit) = P(pos) renormalised over {neg, pos}.
    probs = torch.softmax(raw[:, 1:4], dim=1)
    torch.testing.assert_close(torch.sigmoid(logits[:, 1]), probs[:, 1] / (probs[:, 0] + probs[:, 1]))
    torch.testing.assert_close(logits[:, 0], raw[:, 0])


def test_set_binary_head_overrides_binary_logits_only():
    model = build_model("tiny", LAYOUT).eval()
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    raw_before, original = model(x), model.predict_logits(x)
    weight = torch.randn(3, model.feature_dim, generator=torch.Generator().manual_seed(2))
    bias = torch.tensor([0.1, -0.2, 0.3])
    model.set_binary_head(weight.numpy(), bias.numpy())
    torch.testing.assert_close(model.predict_logits(x), model.features(x) @ weight.T + bias, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model(x), raw_before)
    torch.testing.assert_close(model.predict_logits(x, use_override=False), original)
    w2, b2 = model.effective_binary_head()
    torch.testing.assert_close(w2, weight) and torch.testing.assert_close(b2, bias)
    assert not any(k.startswith("binary_override") for k in model.base_state_dict())
    with pytest.raises(ValueError):
        model.set_binary_head(torch.zeros(2, model.feature_dim), torch.zeros(2))
    model.clear_binary_head()
    torch.testing.assert_close(model.predict_logits(x), original)


def test_seeded_builds_are_identical():
    a, b, c = build_model("tiny", LAYOUT, seed=5), build_model("tiny", LAYOUT, seed=5), build_model("tiny", LAYOUT, seed=6)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not torch.equal(a.head.weight, c.head.weight)


def test_input_normalisations():
    x = torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 1, 3)
    imagenet = InputNormalization("imagenet")(x)
    assert imagenet.shape == (1, 3, 1, 3)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(imagenet[0, :, 0, 2], (1 - mean) / std)
    torch.testing.assert_close(InputNormalization("xrv")(x).flatten(), torch.tensor([-1024.0, 0.0, 1024.0]))
    torch.testing.assert_close(InputNormalization("centered")(x).flatten(), torch.tensor([-1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        InputNormalization("xrv")(torch.zeros(1, 3, 4, 4))
    assert build_model("tiny", LAYOUT).spec()["normalization"] == "centered"
    assert build_model("tiny", LAYOUT).spec()["in_channels"] == 1


def test_densenet121_random_is_one_channel_with_1024_features():
    model = build_model("densenet121", HeadLayout(OBSERVATIONS)).eval()
    assert model.feature_dim == 1024 and model.backbone.features.conv0.in_channels == 1
    with torch.no_grad():
        assert model.predict_logits(torch.rand(1, 1, 32, 32)).shape == (1, 14)


def test_bad_init_and_arch_are_clear_errors():
    with pytest.raises(ChexcftError, match="unknown init"):
        build_model("tiny", LAYOUT, init="hub:foo")
    with pytest.raises(ChexcftError, match="tiny"):
        build_model("tiny", LAYOUT, init="imagenet")
    with pytest.raises(ChexcftError, match="architecture"):
        build_model("resnet9", LAYOUT)
    with pytest.raises(ChexcftError, match="torchxrayvision weights"):
        build_model("densenet121", LAYOUT, init="xrv:no-such-weights")


def test_missing_imagenet_weights_clear_error_and_no_file_created(torch_home):
    path, _ = imagenet_weights_file()
    assert str(path).startswith(str(torch_home))
    with pytest.raises(MissingWeightsError) as info:
        build_model("densenet121", LAYOUT, init="imagenet")
    message = str(info.value)
    assert "densenet121-a639ec97.pth" in message and str(path.parent) in message
    assert _files(torch_home) == set()


def test_missing_xrv_weights_clear_error_and_no_file_created(xrv_home):
    before = _files(xrv_home)
    with pytest.raises(MissingWeightsError) as info:
        build_model("densenet121", LAYOUT, init="xrv:densenet121-res224-chex")
    message = str(info.value)
    assert "chex-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt" in message
    assert str(xrv_home / ".torchxrayvision" / "models_data") in message
    assert _files(xrv_home) == before


def test_empty_xrv_file_counts_as_missing(xrv_home):
    path, _, _ = xrv_weights_file("densenet121-res224-chex")
    path.parent.mkdir(parents=True)
    path.touch()
    with pytest.raises(MissingWeightsError, match=r"empty.*delete"):
        build_model("densenet121", LAYOUT, init="xrv:densenet121-res224-chex")
    assert path.stat().st_size == 0 and _files(xrv_home) == {xrv_home / ".torchxrayvision", path.parent, path}


def _old_style_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # torchvision's published checkpoint names dense-layer parts "norm.1" rather than "norm1".
    pattern = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))([12])\.(weight|bias|running_mean|running_var)$")
    return {pattern.sub(r"\1.\2.\3", key): value for key, value in state.items()}


def test_imagenet_weights_happy_path(torch_home):
    from torchvision.models import densenet121

    torch.manual_seed(0)
    reference = densenet121(weights=None).eval()
    path, _ = imagenet_weights_file()
    path.parent.mkdir(parents=True)
    torch.save(_old_style_keys(reference.state_dict()), path)
    model = build_model("densenet121", LAYOUT, init="imagenet").eval()
    assert model.normalization == "imagenet" and model.backbone.features.conv0.in_channels == 3
    for key, value in reference.features.state_dict().items():
        assert torch.equal(model.backbone.features.state_dict()[key], value), key
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    rgb = (x.repeat(1, 3, 1, 1) - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(torch.relu(reference.features(rgb)), 1), 1)
        torch.testing.assert_close(model.features(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy"])
def test_xrv_weights_whole_module_file_maps_head_and_matches_xrv_features(xrv_home, zipfile):
    import torchxrayvision as xrv

    torch.manual_seed(0)
    reference = xrv.models.DenseNet(weights=None).eval()  # random weights, nothing downloaded
    with torch.no_grad():
        reference.classifier.weight.normal_()
        reference.classifier.bias.normal_()
    path, _, labels = xrv_weights_file("densenet121-res224-chex")
    path.parent.mkdir(parents=True)
    torch.save(reference, path, _use_new_zipfile_serialization=zipfile)  # whole module, like xrv's release files
    if not zipfile:
        # weights_only cannot read whole modules in the legacy format: refused, with the conversion recipe.
        with pytest.raises(InvalidWeightsError, match="safetensors"):
            build_model("densenet121", HeadLayout(("Atelectasis",)), init="xrv:densenet121-res224-chex")
        from safetensors.torch import save_file

        from chexcft.models.weights import xrv_converted_file

        state = {k: v.contiguous() for k, v in reference.state_dict().items() if v is not None}
        save_file(state, str(xrv_converted_file("densenet121-res224-chex")))

    layout = HeadLayout(("No Finding", "Atelectasis", "Pleural Effusion"), ("Pleural Effusion",))
    fresh = build_model("densenet121", layout, seed=0)
    model = build_model("densenet121", layout, init="xrv:densenet121-res224-chex", seed=0).eval()
    assert model.normalization == "xrv" and model.backbone.features.conv0.in_channels == 1
    w, b = reference.classifier.weight.detach(), reference.classifier.bias.detach()
    at, eff = labels.index("Atelectasis"), labels.index("Effusion")
    torch.testing.assert_close(model.head.weight[layout.rows("Atelectasis")[0]], w[at])
    torch.testing.assert_close(model.head.bias[layout.rows("Atelectasis")[0]], b[at])
    neg, pos, unc = layout.rows("Pleural Effusion")
    torch.testing.assert_close(model.head.weight[pos], w[eff])
    assert torch.count_nonzero(model.head.weight[neg]) == 0 and model.head.bias[neg] == 0
    torch.testing.assert_close(model.head.weight[unc], fresh.head.weight[unc])  # no xrv slot: fresh row
    torch.testing.assert_close(model.head.weight[0], fresh.head.weight[0])  # "No Finding" has no xrv slot

    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected_z = reference.features2((2 * x - 1) * 1024)
        torch.testing.assert_close(model.features(x), expected_z, rtol=1e-4, atol=1e-4)
        logits = model.predict_logits(x)
        xrv_logits = reference.classifier(expected_z)
        torch.testing.assert_close(logits[:, 1], xrv_logits[:, at], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(logits[:, 2], xrv_logits[:, eff], rtol=1e-4, atol=1e-4)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_tampered_pickle_is_refused_and_never_runs(torch_home, tmp_path):
    marker = tmp_path / "pwned"
    path, _ = imagenet_weights_file()
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps({"features.conv0.weight": _Evil(marker)}))
    with pytest.raises(InvalidWeightsError, match="refused"):
        build_model("densenet121", LAYOUT, init="imagenet")
    assert not marker.exists()
    torch.save({"state_dict": {"x": _Evil(marker)}}, path)  # torch's zip format with a malicious object inside
    with pytest.raises(InvalidWeightsError, match="refused"):
        build_model("densenet121", LAYOUT, init="imagenet")
    assert not marker.exists()
    disguised = tmp_path / "weights.safetensors"  # a pickle renamed: safetensors never unpickles
    torch.save({"x": _Evil(marker)}, disguised)
    with pytest.raises(InvalidWeightsError, match="weights.safetensors"):
        build_model("tiny", LAYOUT, init=f"file:{disguised}")
    assert not marker.exists()


def test_tampered_xrv_file_is_refused_despite_layer_allow_list(xrv_home, tmp_path):
    marker = tmp_path / "pwned"
    path, _, _ = xrv_weights_file("densenet121-res224-chex")
    path.parent.mkdir(parents=True)
    module = torch.nn.Sequential(torch.nn.Linear(2, 2))
    module.payload = _Evil(marker)
    torch.save(module, path)
    with pytest.raises(InvalidWeightsError, match="refused"):
        build_model("densenet121", LAYOUT, init="xrv:densenet121-res224-chex")
    assert not marker.exists()


def test_file_init_round_trip_and_head_mapping(tmp_path):
    from chexcft.runs import save_weights

    source = build_model("tiny", LAYOUT, seed=3)
    path = save_weights(source, tmp_path / "w.safetensors")
    same = build_model("tiny", LAYOUT, init=f"file:{path}", seed=9)
    for key, value in source.state_dict().items():
        assert torch.equal(same.state_dict()[key], value), key
    other = HeadLayout(("Edema", "Fracture", "Cardiomegaly"))  # different layout: rows mapped by name
    mapped = build_model("tiny", other, init=f"file:{path}", seed=9)
    fresh = build_model("tiny", other, seed=9)
    w, b = source.effective_binary_head()
    torch.testing.assert_close(mapped.head.weight[0], w[2])
    torch.testing.assert_close(mapped.head.weight[2], w[1])  # Cardiomegaly: l_pos - l_neg of the 3-way rows
    torch.testing.assert_close(mapped.head.bias[2], b[1])
    torch.testing.assert_close(mapped.head.weight[1], fresh.head.weight[1])


def test_file_init_with_wrong_keys_or_shapes_or_format(tmp_path):
    from safetensors.torch import save_file

    model = build_model("tiny", LAYOUT)
    state = {k: v.clone() for k, v in model.base_state_dict().items()}
    state["backbone.features.0.weight"] = torch.zeros(8, 1, 5, 5)
    save_file(state, str(tmp_path / "shape.safetensors"))
    with pytest.raises(InvalidWeightsError, match="shape mismatch"):
        build_model("tiny", LAYOUT, init=f"file:{tmp_path / 'shape.safetensors'}")
    save_file({"backbone.something.weight": torch.zeros(2)}, str(tmp_path / "keys.safetensors"))
    with pytest.raises(InvalidWeightsError, match="missing key"):
        build_model("tiny", LAYOUT, init=f"file:{tmp_path / 'keys.safetensors'}")
    save_file({"foo": torch.zeros(2)}, str(tmp_path / "none.safetensors"))
    with pytest.raises(InvalidWeightsError, match="no backbone"):
        build_model("tiny", LAYOUT, init=f"file:{tmp_path / 'none.safetensors'}")
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(InvalidWeightsError, match="junk.safetensors"):
        build_model("tiny", LAYOUT, init=f"file:{tmp_path / 'junk.safetensors'}")
    with pytest.raises(InvalidWeightsError, match=r"\.safetensors"):
        build_model("tiny", LAYOUT, init=f"file:{tmp_path / 'w.pt'}")
    with pytest.raises(MissingWeightsError, match="absent.safetensors"):
        build_model("tiny", LAYOUT, init=f"file:{tmp_path / 'absent.safetensors'}")
    big = build_model("densenet121", LAYOUT)
    save_file(big.base_state_dict(), str(tmp_path / "dense.safetensors"))
    with pytest.raises(InvalidWeightsError):
        build_model("tiny", LAYOUT, init=f"file:{tmp_path / 'dense.safetensors'}")
    assert not np.isnan(model.head.weight.detach().numpy()).any()
    assert os.listdir(tmp_path)  # the files above, nothing else touched


def test_file_init_with_torchxrayvision_keys_uses_xrv_normalisation(tmp_path):
    import torchxrayvision as xrv
    from safetensors.torch import save_file

    torch.manual_seed(1)
    reference = xrv.models.DenseNet(weights=None).eval()
    path = tmp_path / "xrv-converted.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items() if v is not None}, str(path))
    model = build_model("densenet121", LAYOUT, init=f"file:{path}").eval()
    assert model.normalization == "xrv"
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), reference.features2((2 * x - 1) * 1024), rtol=1e-4, atol=1e-4)
