import importlib.util
import os

import pytest
import torch

SCRIPTS = os.path.join(os.path.dirname(__file__), "..", "..", "scripts")


@pytest.fixture(autouse=True)
def one_thread():
    # The test machine is shared: keep each test on one core.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def load_script(name: str):
    """Import scripts/<name>.py as a module, so tests call its main(argv)."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", os.path.join(SCRIPTS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_image_folder(root, classes=("cat", "dog"), train=6, val=2, size=(14, 11), seed=0):
    """ROOT/{train,val}/CLASS/*.png|jpg written with Pillow: alternately PNG and JPEG, odd sizes,
    one greyscale image, each class a different mean colour so that a model can learn it."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        for c, name in enumerate(classes):
            folder = os.path.join(str(root), split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                w, h = size[0] + i % 3, size[1] + i % 2
                colour = np.array([200 if c == 0 else 40, 120, 40 if c == 0 else 200])
                pixels = np.clip(rng.normal(colour, 30, size=(h, w, 3)), 0, 255).astype(np.uint8)
                image = Image.fromarray(pixels)
                if i == 1:
                    image = image.convert("L")
                image.save(os.path.join(folder, f"{i}.{'png' if i % 2 == 0 else 'jpg'}"))
    return str(root)
