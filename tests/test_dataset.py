"""CachedXrayDataset (uint8 batches) and make_loader (batch sampler, workers, seeded order)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

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


def test_batches_have_the_contract_shapes_and_types(cache) -> None:
    image_cache, paths = cache
    slots = image_cache.rows_for(paths)
    targets, mask = labels(len(slots))
    dataset = CachedXrayDataset(image_cache, slots, targets, mask)
    assert len(dataset) == len(paths)
    batch = dataset[[3, 1]]
    assert set(batch) == {"image", "target", "mask", "index"}
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (2, 1, SIZE, SIZE)
    np.testing.assert_array_equal(batch["image"][1, 0].numpy(), image_cache.image(slots[1]))
    assert batch["target"].shape == (2, C) and batch["target"].dtype == torch.float32
    np.testing.assert_array_equal(batch["target"].numpy(), targets[[3, 1]])
    np.testing.assert_array_equal(batch["mask"].numpy(), mask[[3, 1]])
    assert batch["index"].tolist() == [3, 1]
    item = dataset[2]  # a single position gives one item of the same layout
    assert item["image"].shape == (1, SIZE, SIZE) and int(item["index"]) == 2
    np.testing.assert_array_equal(item["image"][0].numpy(), image_cache.image(slots[2]))


def test_consecutive_slots_are_one_slice_and_equal_the_gather(cache) -> None:
    image_cache, paths = cache
    slots = np.sort(image_cache.rows_for(paths))[:4]
    assert (np.diff(slots) == 1).all()
    np.testing.assert_array_equal(image_cache.images(slots), np.stack([image_cache.image(s) for s in slots]))
    np.testing.assert_array_equal(image_cache.images(slots[::-1]), np.stack([image_cache.image(s) for s in slots[::-1]]))


def test_without_targets_batches_have_empty_targets(cache) -> None:
    image_cache, paths = cache
    batch = CachedXrayDataset(image_cache, image_cache.rows_for(paths))[[0, 1]]
    assert batch["target"].shape == (2, 0) and batch["mask"].shape == (2, 0)


def test_missing_slots_and_bad_shapes_are_refused(cache) -> None:
    image_cache, paths = cache
    slots = image_cache.rows_for([*paths, "/nowhere/x.jpg"])
    with pytest.raises(InvalidDatasetError, match="1 of"):
        CachedXrayDataset(image_cache, slots)
    with pytest.raises(InvalidDatasetError, match="targets"):
        CachedXrayDataset(image_cache, slots[:-1], np.zeros((2, C)))


def test_loader_yields_whole_uint8_batches_in_a_seeded_order(cache) -> None:
    image_cache, paths = cache
    slots = image_cache.rows_for(paths)
    targets, mask = labels(len(slots))
    settings = resolve_device("cpu")

    def epoch(seed: int) -> tuple[list[int], torch.Tensor]:
        dataset = CachedXrayDataset(image_cache, slots, targets, mask)
        loader = make_loader(dataset, batch_size=4, shuffle=True, settings=settings, workers=0, seed=seed)
        batches = list(loader)
        assert len(batches) == len(loader) == -(-len(slots) // 4)
        first = batches[0]
        assert first["image"].shape == (4, 1, SIZE, SIZE) and first["image"].dtype == torch.uint8
        assert first["target"].shape == (4, C) and first["mask"].shape == (4, C) and first["index"].dtype == torch.int64
        order = torch.cat([b["index"] for b in batches]).tolist()
        for b in batches:
            np.testing.assert_array_equal(b["target"].numpy(), targets[b["index"].numpy()])
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
        loader = make_loader(CachedXrayDataset(image_cache, slots), batch_size=3, shuffle=True, settings=settings,
                             workers=workers, seed=2)
        return torch.cat([b["image"] for b in loader])

    in_process, in_worker = epoch(0), epoch(1)
    assert in_worker.shape == (len(slots), 1, SIZE, SIZE)
    assert torch.equal(in_process, in_worker)
