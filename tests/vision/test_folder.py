"""Image folders: layout checks, Pillow transforms, unreadable images, worker processes."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from td_fairseq.vision import DataError, load_folder
from td_fairseq.vision.train import Runtime, loader, loader_accuracy
from td_fairseq.vision.transforms import (eval_transform, normalise, random_resized_box, to_uint8_tensor,
                                          train_transform)

from .conftest import make_image_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("images"))


def one_line(error):
    return "\n" not in str(error) and str(error)


def test_layout_classes_and_labels(folder):
    data = load_folder(folder, image_size=8)
    assert data.classes == ["cat", "dog"] and data.num_classes == 2 and data.in_channels == 3
    assert len(data.train_paths) == 12 and len(data.test_paths) == 4
    assert data.train_labels == [0] * 6 + [1] * 6
    assert all(p.endswith((".png", ".jpg")) for p in data.train_paths)
    assert data.describe() == {"name": "folder", "root": folder, "image_size": 8, "classes": ["cat", "dog"]}


def test_transforms_give_fixed_size_uint8_and_follow_the_seed(folder):
    data = load_folder(folder, image_size=8)
    train = data.train_set(seed=3)
    x, y, bad = train.__getitems__([(1, 0), (1, 1), (1, 7)])
    assert x.dtype == torch.uint8 and x.shape == (3, 3, 8, 8) and y.tolist() == [0, 0, 1] and bad == []
    again, _, _ = data.train_set(seed=3).__getitems__([(1, 7), (1, 0)])
    assert torch.equal(again[0], x[2]) and torch.equal(again[1], x[0])  # per sample, not per batch
    other_epoch, _, _ = train.__getitems__([(2, 0)])
    assert not torch.equal(other_epoch[0], x[0])
    test = data.test_set()
    assert torch.equal(test.__getitems__([(5, 0)])[0], test.__getitems__([(9, 0)])[0])  # eval: no randomness
    normalised = data.prepare(x, "cpu")
    assert normalised.dtype == torch.float32 and torch.allclose(normalised, normalise(x))


def test_random_resized_box_stays_inside_and_keeps_the_ratio_bounds():
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, right, bottom = random_resized_box(40, 30, rng)
        assert 0 <= left < right <= 40 and 0 <= top < bottom <= 30
        w, h = right - left, bottom - top
        assert 0.08 * 1200 * 0.8 <= w * h <= 1200 and 3 / 4 * 0.8 <= w / h <= 4 / 3 * 1.25
    assert random_resized_box(1000, 1, np.random.default_rng(0)) == (499, 0, 500, 1)  # fallback: centre crop


def test_eval_transform_resizes_the_shorter_side_then_crops_the_centre():
    image = Image.fromarray(np.arange(40 * 20 * 3, dtype=np.uint32).reshape(20, 40, 3).astype(np.uint8))
    out = eval_transform(image, 8)  # shorter side 20 -> int(8 * 256 / 224) = 9, so 18 x 9, crop 8 x 8
    assert out.size == (8, 8)
    resized = image.resize((18, 9), Image.BILINEAR)
    assert np.array_equal(np.asarray(out), np.asarray(resized.crop((5, 0, 13, 8))))
    flipped = train_transform(image, 6, np.random.default_rng(1))
    assert to_uint8_tensor(flipped).shape == (3, 6, 6)


def test_workers_decode_the_same_batches(folder):
    data = load_folder(folder, image_size=8)
    keys = [[(1, i) for i in range(0, 6)], [(1, i) for i in range(6, 12)]]
    one = [b for b in loader(data.train_set(), keys, Runtime(workers=0))]
    two = [b for b in loader(data.train_set(), keys, Runtime(workers=2))]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(one, two))


def test_layout_errors_are_one_line(tmp_path):
    cases = {}
    (tmp_path / "empty" / "train" / "cat").mkdir(parents=True)
    cases["empty"] = (str(tmp_path / "empty"), "no images in")
    make_image_folder(tmp_path / "one", classes=("cat",))
    cases["one"] = (str(tmp_path / "one"), "has one class (cat): classification needs two or more")
    make_image_folder(tmp_path / "noval")
    for name in ("cat", "dog"):
        for f in os.listdir(tmp_path / "noval" / "val" / name):
            os.unlink(tmp_path / "noval" / "val" / name / f)
    cases["no val images"] = (str(tmp_path / "noval"), "no images in")
    make_image_folder(tmp_path / "extra")
    make_image_folder(tmp_path / "extra_val", classes=("cow",))
    os.rename(tmp_path / "extra_val" / "val" / "cow", tmp_path / "extra" / "val" / "cow")
    cases["unknown val class"] = (str(tmp_path / "extra"), "classes that the training split has not: cow")
    cases["missing"] = (str(tmp_path / "nowhere"), "not found")
    for name, (root, expected) in cases.items():
        with pytest.raises(DataError) as e:
            load_folder(root, 8)
        assert one_line(e.value) and expected in str(e.value), (name, str(e.value))


def test_unreadable_images_stop_with_the_name_or_are_skipped(tmp_path):
    root = make_image_folder(tmp_path / "bad")
    corrupt = os.path.join(root, "val", "dog", "9.jpg")
    with open(corrupt, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
    truncated = os.path.join(root, "val", "cat", "0.png")
    with open(truncated, "r+b") as f:
        f.truncate(60)
    data = load_folder(root, 8)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    with pytest.raises(DataError) as e:
        loader_accuracy(model, data, Runtime(bad_images="stop"))
    assert one_line(e.value) and ("0.png" in str(e.value) or "9.jpg" in str(e.value))
    assert "--bad-images skip" in str(e.value)
    result = loader_accuracy(model, data, Runtime(bad_images="skip", workers=1))
    assert result["skipped_images"] == 2 and result["images"] == 3
