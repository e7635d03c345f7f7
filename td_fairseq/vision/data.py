"""Image classification data as in-memory tensors: CIFAR-10 and scikit-learn's 8x8 digits.

Digits ship inside scikit-learn, so they are the default data set and the test data set:
no network and no files needed. CIFAR-10 is read from the standard python-pickle batches
(``data_batch_1..5``, ``test_batch``) at a local path; ``download`` fetches them on a
networked machine. Every failure a user can cause raises ``DataError``, whose message is
one line the scripts print before exiting 1.
"""
import hashlib
import os
import pickle
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass

import numpy as np
import torch

from ..files import UserError

DATASETS = ("digits", "cifar10")
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR_SUBDIR = "cifar-10-batches-py"  # what the official tarball unpacks to
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # fixed: every run and every checkpoint sees the same split


class DataError(UserError):
    """A data set that cannot be found, read or downloaded; the message is one line."""


@dataclass
class Dataset:
    name: str
    train_x: torch.Tensor  # float [N, C, H, W], normalised with train-set statistics
    train_y: torch.Tensor  # int64 [N]
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    augment: bool  # random crop + flip suits CIFAR; flipping a digit changes it

    @property
    def in_channels(self) -> int:
        return self.train_x.shape[1]


def _normalise(train: torch.Tensor, test: torch.Tensor):
    """Per-channel mean and std of the training images, applied to both splits."""
    mean = train.mean(dim=(0, 2, 3), keepdim=True)
    std = train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return (train - mean) / std, (test - mean) / std


def load_digits() -> Dataset:
    """1797 8x8 grey digits, split 80/20 stratified with a fixed seed."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    images = bunch.images.astype(np.float32)[:, None] / 16.0  # pixel values are 0..16
    train_x, test_x, train_y, test_y = train_test_split(
        images, bunch.target, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED,
        stratify=bunch.target)
    train_x, test_x = _normalise(torch.from_numpy(train_x), torch.from_numpy(test_x))
    return Dataset("digits", train_x, torch.from_numpy(train_y).long(), test_x,
                   torch.from_numpy(test_y).long(), 10, augment=False)


def _cifar_dir(data_dir: str):
    """The folder holding the batches: ``data_dir`` itself or its tarball subfolder."""
    for candidate in (data_dir, os.path.join(data_dir, CIFAR_SUBDIR)):
        if all(os.path.isfile(os.path.join(candidate, n)) for n in CIFAR_TRAIN + (CIFAR_TEST,)):
            return candidate
    return None


def read_cifar_batch(path: str):
    """(uint8 images [N, 3, 32, 32], int64 labels [N]) from one python-pickle batch.

    The batches are pickles by design of the data set; only load files you trust.
    """
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as e:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {type(e).__name__}: {e}") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(f"CIFAR-10 batch {path} has data of shape {data.shape} and {len(labels)} labels; "
                        "expected [N, 3072] and N labels")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32)), torch.from_numpy(labels)


def download_cifar10(data_dir: str, url: str = CIFAR_URL) -> str:
    """Fetch and unpack the official tarball into ``data_dir``; returns the batch folder."""
    os.makedirs(data_dir, exist_ok=True)
    archive = os.path.join(data_dir, os.path.basename(url))
    partial = archive + ".part"
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
    except (urllib.error.URLError, OSError) as e:
        if os.path.exists(partial):
            os.unlink(partial)
        reason = getattr(e, "reason", e)
        raise DataError(f"could not download CIFAR-10 from {url} ({reason}); on a machine without "
                        f"network, copy the python batches into {data_dir} instead") from None
    with open(partial, "rb") as f:
        digest = hashlib.md5(f.read()).hexdigest()
    if digest != CIFAR_MD5:
        os.unlink(partial)
        raise DataError(f"downloaded CIFAR-10 archive has md5 {digest}, expected {CIFAR_MD5}")
    os.replace(partial, archive)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(data_dir, filter="data")
    return os.path.join(data_dir, CIFAR_SUBDIR)


def load_cifar10(data_dir: str, download: bool = False) -> Dataset:
    if not data_dir:
        raise DataError("CIFAR-10 needs --data-dir (a folder with data_batch_1..5 and test_batch)")
    folder = _cifar_dir(data_dir)
    if folder is None and download:
        folder = download_cifar10(data_dir)
    if folder is None:
        raise DataError(f"CIFAR-10 python batches (data_batch_1..5, test_batch) not found in {data_dir} "
                        f"or {os.path.join(data_dir, CIFAR_SUBDIR)}; use --download on a networked machine")
    parts = [read_cifar_batch(os.path.join(folder, name)) for name in CIFAR_TRAIN]
    train_x = torch.cat([p[0] for p in parts]).float() / 255.0
    train_y = torch.cat([p[1] for p in parts])
    test_x, test_y = read_cifar_batch(os.path.join(folder, CIFAR_TEST))
    train_x, test_x = _normalise(train_x, test_x.float() / 255.0)
    return Dataset("cifar10", train_x, train_y, test_x, test_y, 10, augment=True)


def load_dataset(name: str, data_dir: str = None, download: bool = False) -> Dataset:
    if name == "digits":
        return load_digits()
    if name == "cifar10":
        return load_cifar10(data_dir, download)
    raise DataError(f"dataset must be one of {', '.join(DATASETS)}, got {name!r}")
