"""Image classification data held in memory: CIFAR-10/100 and scikit-learn's 8x8 digits.

Digits ship inside scikit-learn, so they are the default data set and the test data set:
no network and no files needed. CIFAR-10 and CIFAR-100 are read from the standard
python-pickle files (``data_batch_1..5``/``test_batch``; ``train``/``test`` with fine labels)
at a local path; ``download`` fetches them on a networked machine. Image folders are in
``folder``. Every failure a user can cause raises ``DataError``, whose message is one line
the scripts print before exiting 1.

Each data set hands the training loop torch datasets keyed by ``(epoch, index)``
(``train_set``, ``test_set``, ``calibration_set``): a sample's random augmentation depends
on the seed, the epoch and its index only, never on which process or worker loads it, so
one process with batch 2B sees exactly the images two processes with batch B see.
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
from torch.nn import functional as F

from .errors import DataError
from .folder import load_folder

DATASETS = ("digits", "cifar10", "cifar100", "folder")
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # fixed: every run and every checkpoint sees the same split
CIFAR_PAD = 4  # the standard augmentation: pad by 4, crop 32x32 back at a random offset, flip


@dataclass(frozen=True)
class CifarFormat:
    """Where one of the two CIFAR data sets lives and how its pickles name things."""
    name: str
    url: str
    md5: str
    subdir: str  # what the official tarball unpacks to
    train: tuple
    test: str
    label_key: bytes
    num_classes: int


CIFAR = {
    "cifar10": CifarFormat("CIFAR-10", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                           "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py",
                           tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", b"labels", 10),
    "cifar100": CifarFormat("CIFAR-100", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                            "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python", ("train",), "test",
                            b"fine_labels", 100),
}


def as_is(batch):
    """The DataLoader's collate: datasets here return whole batches (``__getitems__``)."""
    return batch


def epoch_seed(seed: int, epoch: int) -> int:
    """One 32-bit seed per (seed, epoch), from numpy's SeedSequence (no collisions by sums)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def crop_flip(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int = CIFAR_PAD) -> torch.Tensor:
    """Zero-pad by ``pad``, crop back at ``offsets[i] = (dy, dx)``, flip where ``flips``."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    out = torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets.tolist())])
    out[flips] = out[flips].flip(3)
    return out


class TensorImages(torch.utils.data.Dataset):
    """Images already in memory (normalised floats); keys are (epoch, index). With
    ``augment``, the standard CIFAR crop and flip, drawn per epoch for the whole split."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, augment: bool = False, seed: int = 0):
        self.x, self.y, self.augment, self.seed = x, y, augment, seed
        self._draws = (None, None, None)  # (epoch, offsets, flips) of the last epoch seen

    def __len__(self):
        return len(self.y)

    def _epoch_draws(self, epoch: int):
        if self._draws[0] != epoch:
            g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
            offsets = torch.randint(0, 2 * CIFAR_PAD + 1, (len(self.y), 2), generator=g)
            self._draws = (epoch, offsets, torch.rand(len(self.y), generator=g) < 0.5)
        return self._draws[1:]

    def __getitems__(self, keys):
        epochs = [epoch for epoch, _ in keys]
        index = torch.tensor([i for _, i in keys], dtype=torch.long)
        x, y = self.x[index], self.y[index]
        if self.augment:
            if len(set(epochs)) != 1:
                raise ValueError("one batch holds one epoch's samples")
            offsets, flips = self._epoch_draws(epochs[0])
            x = crop_flip(x, offsets[index], flips[index])
        return x, y, []

    def __getitem__(self, key):
        x, y, _ = self.__getitems__([key])
        return x[0], y[0]


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

    def train_set(self, seed: int = 0) -> TensorImages:
        return TensorImages(self.train_x, self.train_y, self.augment, seed)

    def test_set(self) -> TensorImages:
        return TensorImages(self.test_x, self.test_y)

    def calibration_set(self, n: int) -> TensorImages:
        """The first ``n`` training images, not augmented (the splits are shuffled already)."""
        return TensorImages(self.train_x[:n], self.train_y[:n])

    def prepare(self, x: torch.Tensor, device, memory_format=torch.contiguous_format) -> torch.Tensor:
        return x.to(device, non_blocking=True).contiguous(memory_format=memory_format)

    def describe(self) -> dict:
        return {"name": self.name}


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


def _cifar_dir(data_dir: str, spec: CifarFormat):
    """The folder holding the pickles: ``data_dir`` itself or its tarball subfolder."""
    for candidate in (data_dir, os.path.join(data_dir, spec.subdir)):
        if all(os.path.isfile(os.path.join(candidate, n)) for n in spec.train + (spec.test,)):
            return candidate
    return None


def read_cifar_batch(path: str, label_key: bytes = b"labels", name: str = "CIFAR-10"):
    """(uint8 images [N, 3, 32, 32], int64 labels [N]) from one python-pickle file.

    The files are pickles by design of the data set; only load files you trust.
    """
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as e:
        raise DataError(f"cannot read {name} file {path}: {type(e).__name__}: {e}") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(f"{name} file {path} has data of shape {data.shape} and {len(labels)} labels; "
                        "expected [N, 3072] and N labels")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32)), torch.from_numpy(labels)


def download_cifar(data_dir: str, spec: CifarFormat) -> str:
    """Fetch and unpack the official tarball into ``data_dir``; returns the pickles' folder."""
    os.makedirs(data_dir, exist_ok=True)
    archive = os.path.join(data_dir, os.path.basename(spec.url))
    partial = archive + ".part"
    try:
        with urllib.request.urlopen(spec.url, timeout=60) as response, open(partial, "wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
    except (urllib.error.URLError, OSError) as e:
        if os.path.exists(partial):
            os.unlink(partial)
        reason = getattr(e, "reason", e)
        raise DataError(f"could not download {spec.name} from {spec.url} ({reason}); on a machine without "
                        f"network, copy the python files into {data_dir} instead") from None
    with open(partial, "rb") as f:
        digest = hashlib.md5(f.read()).hexdigest()
    if digest != spec.md5:
        os.unlink(partial)
        raise DataError(f"downloaded {spec.name} archive has md5 {digest}, expected {spec.md5}")
    os.replace(partial, archive)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(data_dir, filter="data")
    return os.path.join(data_dir, spec.subdir)


def load_cifar(which: str, data_dir: str, download: bool = False) -> Dataset:
    """``which``: cifar10 or cifar100 (its 100 fine labels)."""
    spec = CIFAR[which]
    files = f"{', '.join(spec.train)} and {spec.test}"
    if not data_dir:
        raise DataError(f"{spec.name} needs --data-dir (a folder with {files})")
    folder = _cifar_dir(data_dir, spec)
    if folder is None and download:
        folder = download_cifar(data_dir, spec)
    if folder is None:
        raise DataError(f"{spec.name} python files ({files}) not found in {data_dir} "
                        f"or {os.path.join(data_dir, spec.subdir)}; use --download on a networked machine")
    parts = [read_cifar_batch(os.path.join(folder, name), spec.label_key, spec.name) for name in spec.train]
    train_x = torch.cat([p[0] for p in parts]).float() / 255.0
    train_y = torch.cat([p[1] for p in parts])
    test_x, test_y = read_cifar_batch(os.path.join(folder, spec.test), spec.label_key, spec.name)
    for labels, name in ((train_y, spec.train[0]), (test_y, spec.test)):
        if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < spec.num_classes:
            raise DataError(f"{spec.name} file {os.path.join(folder, name)} has labels outside "
                            f"0..{spec.num_classes - 1}")
    train_x, test_x = _normalise(train_x, test_x.float() / 255.0)
    return Dataset(which, train_x, train_y, test_x, test_y, spec.num_classes, augment=True)


def load_cifar10(data_dir: str, download: bool = False) -> Dataset:
    return load_cifar("cifar10", data_dir, download)


def load_dataset(name: str, data_dir: str = None, download: bool = False, image_size: int = None):
    """An in-memory ``Dataset``, or for ``folder`` a ``folder.FolderData`` (images are read
    lazily, ``image_size`` square, default 224)."""
    if name == "digits":
        return load_digits()
    if name in CIFAR:
        return load_cifar(name, data_dir, download)
    if name == "folder":
        return load_folder(data_dir, image_size or 224)
    raise DataError(f"dataset must be one of {', '.join(DATASETS)}, got {name!r}")
