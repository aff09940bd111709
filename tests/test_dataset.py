"""CachedXrayDataset, the augmentation transforms and make_loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from chexcft.augment import eval_transform, takes_uint8, training_transform
from chexcft.data.cache import ImageCache, build_cache
from chexcft.data.dataset import CachedXrayDataset, make_loader
from chexcft.device import resolve_device
from chexcft.errors import InvalidDatasetError
from tests.builders import make_chexpert_tree

SIZE = 32
C = 3


@pytest.fixture()
def cache(tmp_path: Path) -> tuple[ImageCache, list[str]]:
    tree = make_chexpert_tree(tmp_path, n_patients=4, seed=1)
    paths = [str(tree.root / p) for p in tree.train["Path"]]
    build_cache(paths, tmp_path / "cache", SIZE, workers=0, progress=False)
    return ImageCache.open(tmp_path / "cache"), paths


def labels(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, size=(n, C)).astype(np.float32)
    mask = rng.integers(0, 2, size=(n, C)).astype(np.float32)
    return targets, mask


def test_items_have_the_contract_shapes_and_types(cache) -> None:
    image_cache, paths = cache
    slots = image_cache.rows_for(paths)
    targets, mask = labels(len(slots))
    dataset = CachedXrayDataset(image_cache, slots, targets, mask, transform=eval_transform())
    assert len(dataset) == len(paths)
    item = dataset[1]
    assert set(item) == {"image", "target", "mask", "index"}
    assert item["image"].dtype == torch.float32 and item["image"].shape == (1, SIZE, SIZE)
    assert type(item["image"]) is torch.Tensor
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    np.testing.assert_allclose(item["image"][0].numpy(), image_cache.image(slots[1]) / 255.0, atol=1e-6)
    assert item["target"].shape == (C,) and item["target"].dtype == torch.float32
    np.testing.assert_array_equal(item["target"].numpy(), targets[1])
    np.testing.assert_array_equal(item["mask"].numpy(), mask[1])
    assert item["index"] == 1


def test_without_targets_items_have_empty_targets(cache) -> None:
    image_cache, paths = cache
    item = CachedXrayDataset(image_cache, image_cache.rows_for(paths))[0]
    assert item["target"].shape == (0,) and item["mask"].shape == (0,)


def test_missing_slots_and_bad_shapes_are_refused(cache) -> None:
    image_cache, paths = cache
    slots = image_cache.rows_for([*paths, "/nowhere/x.jpg"])
    with pytest.raises(InvalidDatasetError, match="1 of"):
        CachedXrayDataset(image_cache, slots)
    with pytest.raises(InvalidDatasetError, match="targets"):
        CachedXrayDataset(image_cache, slots[:-1], np.zeros((2, C)))


@pytest.mark.parametrize("backend", ["fast", "monai"])
def test_training_augmentation_is_seeded_and_eval_is_identity(backend: str) -> None:
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.uniform(0.2, 0.8, size=(1, SIZE, SIZE)).astype(np.float32))

    def run(seed: int) -> np.ndarray:
        transform = training_transform(seed=seed, image_size=SIZE, prob=1.0, backend=backend)
        outputs = [transform(image.clone()) for _ in range(3)]
        assert all(type(o) is torch.Tensor and o.dtype == torch.float32 for o in outputs)
        return np.stack([o.numpy() for o in outputs])

    first, again, other = run(3), run(3), run(4)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    assert not np.allclose(first[0], image.numpy())
    assert first.min() >= 0.0 and first.max() <= 1.0 and first.shape == (3, 1, SIZE, SIZE)
    np.testing.assert_array_equal(np.asarray(eval_transform()(image.clone())), image.numpy())
    np.testing.assert_array_equal(np.asarray(training_transform(seed=3, enabled=False)(image.clone())), image.numpy())
    np.testing.assert_array_equal(np.asarray(training_transform(seed=3, prob=0.0)(image.clone())), image.numpy())


def test_loader_in_process_batches_and_is_reproducible(cache) -> None:
    image_cache, paths = cache
    slots = image_cache.rows_for(paths)
    targets, mask = labels(len(slots))
    settings = resolve_device("cpu")

    def epoch(seed: int) -> tuple[list[int], torch.Tensor]:
        dataset = CachedXrayDataset(image_cache, slots, targets, mask, transform=training_transform(image_size=SIZE, prob=1.0))
        loader = make_loader(dataset, batch_size=4, shuffle=True, settings=settings, workers=0, seed=seed)
        batches = list(loader)
        first = batches[0]
        assert first["image"].shape == (4, 1, SIZE, SIZE) and first["target"].shape == (4, C)
        assert first["mask"].shape == (4, C) and first["index"].dtype == torch.int64
        order = torch.cat([b["index"] for b in batches]).tolist()
        return order, torch.cat([b["image"] for b in batches])

    order, images = epoch(seed=5)
    assert sorted(order) == list(range(len(slots)))
    order_again, images_again = epoch(seed=5)
    assert order == order_again and torch.equal(images, images_again)
    order_other, _ = epoch(seed=6)
    assert order_other != order


def test_a_worker_process_gives_the_same_batches_as_the_main_process(cache) -> None:
    image_cache, paths = cache
    slots = image_cache.rows_for(paths)
    settings = resolve_device("cpu")

    def epoch(workers: int) -> torch.Tensor:
        dataset = CachedXrayDataset(image_cache, slots, transform=training_transform(image_size=SIZE, prob=1.0))
        loader = make_loader(dataset, batch_size=8, shuffle=False, settings=settings, workers=workers, seed=2)
        return torch.cat([b["image"] for b in loader])

    in_process, in_worker = epoch(0), epoch(1)  # worker 0 is seeded like the main process
    assert in_worker.shape == (len(slots), 1, SIZE, SIZE)
    assert torch.equal(in_process, in_worker)


def test_fast_augmentation_stays_small() -> None:
    """Each fast step at its range limits changes a smooth image only moderately (small affine, mild gamma, faint noise)."""
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    image = torch.from_numpy((0.3 + 0.4 * np.sin(xx / 9.0) * np.cos(yy / 11.0) ** 2)[None].astype(np.float32))
    transform = training_transform(seed=0, image_size=64, prob=1.0)
    for _ in range(5):
        out = transform(image.clone()).numpy()
        centre = (slice(None), slice(16, 48), slice(16, 48))
        assert np.abs(out[centre] - image.numpy()[centre]).mean() < 0.15
        assert out[centre].std() > 0.05  # still the same kind of image, not blanked
    noise_only = training_transform(seed=1, image_size=64, prob=1.0, rotate_deg=0, translate=0, scale=0, gamma=(1, 1))
    diffs = np.stack([noise_only(image.clone()).numpy() - image.numpy() for _ in range(20)])
    assert 0 < diffs.std() < 0.03 and abs(diffs.mean()) < 0.005
    assert not np.allclose(diffs[0], diffs[1])


@pytest.mark.parametrize("prob", [0.5, 1.0])
def test_fast_pipeline_gives_the_same_images_from_uint8_as_from_floats(prob: float) -> None:
    """The dataset hands the cache's uint8 pixels to the fast pipeline; they must come out as the float path's."""
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, size=(1, SIZE, SIZE), dtype=np.uint8)
    pixels[:, :, :5] = 0  # letterbox padding
    pixels.setflags(write=False)  # like the memory-mapped cache
    floats = torch.from_numpy(pixels / np.float32(255.0)).float()
    from_uint8 = training_transform(seed=9, image_size=SIZE, prob=prob)
    from_float = training_transform(seed=9, image_size=SIZE, prob=prob)
    before = floats.clone()
    for _ in range(8):
        a, b = from_uint8(pixels), from_float(floats)
        assert torch.equal(floats, before)  # the caller's image is never written to
        assert type(a) is torch.Tensor and a.dtype == torch.float32 and a.shape == (1, SIZE, SIZE)
        assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4)  # gamma: lookup table vs cv2.pow
    np.testing.assert_allclose(eval_transform()(pixels).numpy(), floats.numpy(), atol=1e-7)


def test_only_pipelines_that_take_uint8_get_it(cache) -> None:
    image_cache, paths = cache
    slots = image_cache.rows_for(paths)
    assert takes_uint8(training_transform(seed=0)) and takes_uint8(eval_transform())
    assert not takes_uint8(training_transform(seed=0, backend="monai")) and not takes_uint8(None)
    for backend in ("fast", "monai"):
        transform = training_transform(seed=4, image_size=SIZE, prob=1.0, backend=backend)
        dataset = CachedXrayDataset(image_cache, slots, transform=transform)
        expected = training_transform(seed=4, image_size=SIZE, prob=1.0, backend=backend)
        for i in range(3):
            image = torch.from_numpy(image_cache.image(slots[i]) / np.float32(255.0)).float()[None]
            np.testing.assert_allclose(dataset[i]["image"].numpy(), np.asarray(expected(image)), atol=1e-4)
