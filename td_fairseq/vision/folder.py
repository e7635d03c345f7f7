"""Image folders in the ImageNet layout: ``ROOT/train/CLASS/*.jpg|png`` and
``ROOT/val/CLASS/...``; class names are the training subfolders, sorted.

Images are decoded with Pillow when a batch is asked for, so a DataLoader's worker
processes (``--workers``) do the decoding. An image Pillow cannot read is not raised in the
worker (DataLoader would wrap it in a traceback): the batch carries ``(path, reason)`` for it
and the training loop stops with that one line or, with ``--bad-images skip``, counts it.
A sample's random crop and flip come from ``(seed, epoch, index)`` alone.
"""
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..files import first_line
from .errors import DataError
from .transforms import eval_transform, normalise, to_uint8_tensor, train_transform

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
SPLITS = ("train", "val")
BAD_IMAGES = ("stop", "skip")
LAYOUT = "ROOT/train/CLASS/IMAGE.jpg|png and ROOT/val/CLASS/IMAGE.jpg|png"


def find_images(folder: str, classes=None):
    """(paths, labels, classes) of ``folder/CLASS/IMAGE``. Classes are the subfolders that
    hold images, sorted, unless ``classes`` (the training split's) fixes the label order."""
    if not os.path.isdir(folder):
        raise DataError(f"no folder {folder} (expected {LAYOUT})")
    files = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_dir():
            files[entry.name] = sorted(e.path for e in os.scandir(entry.path)
                                       if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))
    if classes is None:
        classes = [name for name, found in files.items() if found]
    unknown = [name for name, found in files.items() if found and name not in classes]
    if unknown:
        raise DataError(f"{folder} has classes that the training split has not: {', '.join(unknown[:5])}")
    index = {name: i for i, name in enumerate(classes)}
    paths, labels = [], []
    for name, found in files.items():
        paths += found
        labels += [index[name]] * len(found) if found else []
    if not paths:
        raise DataError(f"no images in {folder} (expected {LAYOUT})")
    return paths, labels, classes


def read_image(path: str) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")  # decodes now, inside the `with`; greyscale, palette, CMYK -> RGB


class FolderImages(torch.utils.data.Dataset):
    """Keys (epoch, index); ``train``: random resized crop and flip, else the eval transform."""

    def __init__(self, paths, labels, size: int, train: bool, seed: int = 0):
        self.paths, self.labels = list(paths), list(labels)
        self.size, self.train, self.seed = size, train, seed

    def __len__(self):
        return len(self.paths)

    def load(self, epoch: int, index: int) -> torch.Tensor:
        image = read_image(self.paths[index])
        if self.train:
            image = train_transform(image, self.size, np.random.default_rng([self.seed, epoch, index]))
        else:
            image = eval_transform(image, self.size)
        return to_uint8_tensor(image)

    def __getitems__(self, keys):
        images, labels, bad = [], [], []
        for epoch, index in keys:
            try:
                images.append(self.load(epoch, index))
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
                # Pillow raises these for unreadable, truncated or hostile files
                bad.append((self.paths[index], f"{type(error).__name__}: {first_line(error)}"))
                continue
            labels.append(self.labels[index])
        x = torch.stack(images) if images else torch.empty(0, 3, self.size, self.size, dtype=torch.uint8)
        return x, torch.tensor(labels, dtype=torch.long), bad

    def __getitem__(self, key):
        x, y, bad = self.__getitems__([key])
        if bad:
            raise DataError(f"cannot read image {bad[0][0]}: {bad[0][1]}")
        return x[0], y[0]


@dataclass
class FolderData:
    root: str
    classes: list
    train_paths: list
    train_labels: list
    test_paths: list
    test_labels: list
    image_size: int
    name: str = "folder"
    in_channels: int = 3

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def train_set(self, seed: int = 0) -> FolderImages:
        return FolderImages(self.train_paths, self.train_labels, self.image_size, True, seed)

    def test_set(self) -> FolderImages:
        return FolderImages(self.test_paths, self.test_labels, self.image_size, False)

    def calibration_set(self, n: int) -> FolderImages:
        """``n`` training images, a fixed random choice (the files are sorted by class), with
        the evaluation transform."""
        order = np.random.default_rng(0).permutation(len(self.train_paths))[:n]
        return FolderImages([self.train_paths[i] for i in order], [self.train_labels[i] for i in order],
                            self.image_size, False)

    def prepare(self, x: torch.Tensor, device, memory_format=torch.contiguous_format) -> torch.Tensor:
        return normalise(x.to(device, non_blocking=True)).contiguous(memory_format=memory_format)

    def describe(self) -> dict:
        return {"name": self.name, "root": self.root, "image_size": self.image_size, "classes": list(self.classes)}


def load_folder(root: str, image_size: int = 224) -> FolderData:
    """Scan ``root``'s train and val folders (no image is decoded here)."""
    if not root:
        raise DataError(f"--dataset folder needs --data-dir ROOT ({LAYOUT})")
    if not os.path.isdir(root):
        raise DataError(f"image folder {root} not found (expected {LAYOUT})")
    if image_size < 1:
        raise DataError(f"--image-size must be positive, got {image_size}")
    train_paths, train_labels, classes = find_images(os.path.join(root, "train"))
    if len(classes) < 2:
        raise DataError(f"{os.path.join(root, 'train')} has one class ({classes[0]}): classification needs two or more")
    test_paths, test_labels, _ = find_images(os.path.join(root, "val"), classes)
    return FolderData(root, classes, train_paths, train_labels, test_paths, test_labels, image_size)
