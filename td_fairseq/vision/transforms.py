"""The standard ImageNet transforms, written with Pillow and numpy (no torchvision).

Training: a random crop of 8 % to 100 % of the area with aspect ratio 3/4 to 4/3, resized
to ``size`` x ``size`` (bilinear, antialiased), flipped with probability 1/2: the algorithm
of torchvision's ``RandomResizedCrop`` (10 tries, then a centre crop). Evaluation: the
shorter side resized to ``size * 256 / 224`` (256 for 224), then the centre ``size`` square.
Both return uint8 tensors [3, size, size]; normalisation happens on the training device,
so worker processes send a quarter of the bytes.
"""
import math

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_RESIZE = 256 / 224


def random_resized_box(width: int, height: int, rng: np.random.Generator, scale=(0.08, 1.0),
                       ratio=(3 / 4, 4 / 3)) -> tuple:
    """(left, top, right, bottom) of a random crop, as torchvision's RandomResizedCrop picks it."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    in_ratio = width / height  # fallback: the centre crop of the nearest allowed ratio
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


def train_transform(image: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
    box = random_resized_box(image.width, image.height, rng)
    image = image.resize((size, size), Image.BILINEAR, box=box)
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    return image


def eval_transform(image: Image.Image, size: int) -> Image.Image:
    resize = int(size * EVAL_RESIZE)
    short, long = sorted((image.width, image.height))
    new_long = int(resize * long / short)
    new_size = (resize, new_long) if image.width <= image.height else (new_long, resize)
    image = image.resize(new_size, Image.BILINEAR)
    left = int(round((image.width - size) / 2.0))
    top = int(round((image.height - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def to_uint8_tensor(image: Image.Image) -> torch.Tensor:
    """[3, H, W] uint8 from an RGB image."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def normalise(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 [N, 3, H, W] to floats with ImageNet's per-channel mean and std, on x's device."""
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x.float() / 255.0 - m) / s
