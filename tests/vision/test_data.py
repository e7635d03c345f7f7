import os
import pickle
import urllib.error

import numpy as np
import pytest
import torch

from td_fairseq.vision import DataError, TensorImages, load_cifar10, load_dataset, load_digits
from td_fairseq.vision import data as data_module


def write_fake_cifar(folder, per_batch=3, test=2, seed=0):
    """Tiny batches in the real format: dict with bytes keys, uint8 rows of
    1024 red, 1024 green, 1024 blue values, labels a list of ints."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    images, labels = {}, {}
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test)]:
        images[name] = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        labels[name] = [int(v) for v in rng.integers(0, 10, size=n)]
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({b"data": images[name].reshape(n, -1), b"labels": labels[name],
                         b"batch_label": name.encode()}, f)
    return images, labels


def test_digits_split_is_fixed_and_normalised():
    a, b = load_digits(), load_digits()
    assert a.train_x.shape == (1437, 1, 8, 8) and a.test_x.shape == (360, 1, 8, 8)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert torch.bincount(a.test_y).tolist() == [36, 36, 35, 37, 36, 37, 36, 36, 35, 36]  # stratified
    assert abs(float(a.train_x.mean())) < 1e-4
    assert a.in_channels == 1 and a.num_classes == 10 and not a.augment


def test_cifar_loader_reads_the_pickle_layout(tmp_path):
    images, labels = write_fake_cifar(tmp_path / "cifar")
    data = load_cifar10(str(tmp_path / "cifar"))
    assert data.train_x.shape == (15, 3, 32, 32) and data.test_x.shape == (2, 3, 32, 32)
    assert data.train_y.tolist() == sum((labels[f"data_batch_{i}"] for i in range(1, 6)), [])
    assert data.test_y.tolist() == labels["test_batch"]
    raw = np.concatenate([images[f"data_batch_{i}"] for i in range(1, 6)]).astype(np.float32) / 255
    mean, std = raw.mean(axis=(0, 2, 3), keepdims=True), raw.std(axis=(0, 2, 3), ddof=1, keepdims=True)
    assert np.allclose(data.train_x.numpy(), (raw - mean) / std, atol=1e-4)
    test_raw = images["test_batch"].astype(np.float32) / 255
    assert np.allclose(data.test_x.numpy(), (test_raw - mean) / std, atol=1e-4)  # train statistics
    assert data.augment


def test_cifar_loader_finds_the_tarball_subfolder(tmp_path):
    write_fake_cifar(tmp_path / "cifar-10-batches-py")
    assert load_dataset("cifar10", str(tmp_path)).train_x.shape[0] == 15


def one_line(error):
    return "\n" not in str(error) and str(error)


def test_missing_cifar_dir_is_one_clear_line(tmp_path):
    with pytest.raises(DataError) as e:
        load_cifar10(str(tmp_path / "nowhere"))
    assert one_line(e.value) and "--download" in str(e.value) and "data_batch_1" in str(e.value)


def test_corrupt_batch_is_a_data_error(tmp_path):
    write_fake_cifar(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError) as e:
        load_cifar10(str(tmp_path))
    assert one_line(e.value) and "data_batch_3" in str(e.value)


def test_offline_download_fails_with_one_line(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")
    monkeypatch.setattr(data_module.urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as e:
        load_cifar10(str(tmp_path / "cifar"), download=True)
    assert one_line(e.value) and "could not download" in str(e.value)
    assert os.listdir(tmp_path / "cifar") == []  # no partial archive left behind


def write_fake_cifar100(folder, train=6, test=3, seed=0):
    """The CIFAR-100 layout: one 'train' and one 'test' pickle with fine and coarse labels."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    labels = {}
    for name, n in (("train", train), ("test", test)):
        labels[name] = [int(v) for v in rng.integers(0, 100, size=n)]
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), b"fine_labels": labels[name],
                         b"coarse_labels": [v // 5 for v in labels[name]], b"filenames": [b"x"] * n}, f)
    return labels


def test_cifar100_reads_fine_labels_from_the_tarball_subfolder(tmp_path):
    labels = write_fake_cifar100(tmp_path / "cifar-100-python")
    data = load_dataset("cifar100", str(tmp_path))
    assert data.name == "cifar100" and data.num_classes == 100 and data.augment
    assert data.train_x.shape == (6, 3, 32, 32) and data.train_y.tolist() == labels["train"]
    assert data.test_y.tolist() == labels["test"]


def test_cifar100_missing_files_name_them(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("cifar100", str(tmp_path))
    assert one_line(e.value) and "CIFAR-100 python files (train and test) not found" in str(e.value)


def test_augmentation_depends_on_seed_epoch_and_index_only():
    x = torch.randn(10, 3, 32, 32)
    images = TensorImages(x, torch.arange(10), augment=True, seed=1)
    batch, _, _ = images.__getitems__([(2, i) for i in range(10)])
    alone, _, _ = TensorImages(x, torch.arange(10), augment=True, seed=1).__getitems__([(2, 7), (2, 3)])
    assert torch.equal(alone[0], batch[7]) and torch.equal(alone[1], batch[3])
    later, _, _ = images.__getitems__([(3, i) for i in range(10)])
    assert not torch.equal(later, batch)
    plain, _, _ = TensorImages(x, torch.arange(10)).__getitems__([(2, 4)])
    assert torch.equal(plain[0], x[4])
