"""Grad-CAM heatmaps (chexcft.heatmap): the finding's logit drives them, and they line up with the original image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chexcft.heatmap import finding_heatmap, gradcam, mean_heatmap, unletterbox
from chexcft.models import HeadLayout, build_model
from chexcft.preprocess import letterbox
from chexcft.schema import OBSERVATIONS
from tests.builders import synthetic_xray


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = build_model("tiny", HeadLayout(OBSERVATIONS), init="random", seed=0)
    return net.eval()


def test_gradcam_is_a_unit_map_that_depends_on_the_finding(model) -> None:
    square = letterbox(synthetic_xray(40, 40, seed=1).astype(np.float32) / 255.0, 32)
    edema = gradcam(model, square, OBSERVATIONS.index("Edema"))
    effusion = gradcam(model, square, OBSERVATIONS.index("Pleural Effusion"))
    assert edema.shape == (32, 32) and edema.dtype == np.float32
    assert edema.min() >= 0.0 and edema.max() <= 1.0 and edema.max() > 0.5
    assert not np.allclose(edema, effusion)
    assert all(p.grad is None for p in model.parameters())  # nothing left behind on the shared model


def test_gradcam_follows_the_cft_head_when_set(model) -> None:
    square = letterbox(synthetic_xray(40, 40, seed=2).astype(np.float32) / 255.0, 32)
    c = OBSERVATIONS.index("Edema")
    weight, bias = model.effective_binary_head()
    before = gradcam(model, square, c)
    flipped = weight.clone()
    flipped[c] = -weight[c]
    model.set_binary_head(flipped, bias)
    try:
        with_cft = gradcam(model, square, c)
        without_cft = gradcam(model, square, c, use_override=False)
    finally:
        model.clear_binary_head()
    np.testing.assert_allclose(without_cft, before, atol=1e-5)
    assert not np.allclose(with_cft, before)


def test_unletterbox_maps_the_square_back_onto_the_image_geometry() -> None:
    # a 20 x 40 (h x w) image letterboxed to 32: rows 8..23 hold the image, 0..7 and 24..31 are padding
    square = np.zeros((32, 32), dtype=np.float32)
    square[8:24, :16] = 1.0  # left half of the image area is hot
    back = unletterbox(square, (20, 40))
    assert back.shape == (20, 40)
    assert back[:, :15].min() > 0.9 and back[:, 25:].max() < 0.1


def test_finding_heatmap_has_the_original_shape(model) -> None:
    pixels = synthetic_xray(30, 50, seed=3).astype(np.float32) / 255.0
    heat = finding_heatmap(model, pixels, OBSERVATIONS.index("Cardiomegaly"), 32)
    assert heat.shape == (30, 50) and 0.0 <= heat.min() and heat.max() <= 1.0


def test_mean_heatmap_rescales_to_one() -> None:
    a = np.array([[0.0, 0.5]], dtype=np.float32)
    b = np.array([[0.0, 0.1]], dtype=np.float32)
    np.testing.assert_allclose(mean_heatmap([a, b]), [[0.0, 1.0]])
    with pytest.raises(ValueError):
        mean_heatmap([])
