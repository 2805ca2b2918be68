"""A small deterministic image-classification set in ImageNet folder layout for the demo.

Six visually distinct classes (40 training and 20 validation images each by default): each is
one shape drawn in its own colour family (hue, size, position, rotation and brightness jitter)
on a noisy background of random colour, so a network learns it in a few epochs while
augmentations still matter. The same ``seed`` always writes the same files.

Layout written under ``root`` (``data/demo`` in ``make demo``), readable by mmpretrain's
``ImageNet`` dataset with ``data_root=root/cls`` and ``split='train'`` / ``'val'``::

    root/cls/train/circle/circle_0000.png ...
    root/cls/val/circle/circle_0000.png ...
    root/cls/meta/classes.txt
"""
import colorsys
import math
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

#: Class names, sorted as mmpretrain sorts class folders (so index = position here).
CLASSES: Tuple[str, ...] = ('circle', 'cross', 'ring', 'square', 'stripes', 'triangle')
#: Base hue of each class (fraction of the colour wheel); jittered per image.
CLASS_HUES: Dict[str, float] = {
    'circle': 0.0, 'cross': 0.17, 'ring': 0.5, 'square': 0.33, 'stripes': 0.83, 'triangle': 0.66
}
HUE_JITTER = 0.06
SPLITS = ('train', 'val')


def _colour(rng: np.random.RandomState, hue: float) -> Tuple[int, int, int]:
    h = (hue + rng.uniform(-HUE_JITTER, HUE_JITTER)) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _rotate(points: List[Tuple[float, float]], cx: float, cy: float,
            angle: float) -> List[Tuple[float, float]]:
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float,
                angle: float, fill: Tuple[int, int, int]) -> None:
    """Draw one shape of radius ``r`` centred at (cx, cy)."""
    if kind == 'circle':
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif kind == 'ring':
        width = max(2, int(r * 0.35))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill, width=width)
    elif kind == 'square':
        corners = [(-r, -r), (r, -r), (r, r), (-r, r)]
        draw.polygon(_rotate([(x * 0.8, y * 0.8) for x, y in corners], cx, cy, angle), fill=fill)
    elif kind == 'triangle':
        corners = [(r * math.cos(a), r * math.sin(a))
                   for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        draw.polygon(_rotate(corners, cx, cy, angle), fill=fill)
    elif kind == 'cross':
        w = r * 0.35
        bar = [(-r, -w), (r, -w), (r, w), (-r, w)]
        draw.polygon(_rotate(bar, cx, cy, angle), fill=fill)
        draw.polygon(_rotate(bar, cx, cy, angle + math.pi / 2), fill=fill)
    elif kind == 'stripes':
        w = r * 0.22
        for offset in (-2.0, 0.0, 2.0):
            bar = [(-r, offset * w - w / 2), (r, offset * w - w / 2), (r, offset * w + w / 2),
                   (-r, offset * w + w / 2)]
            draw.polygon(_rotate(bar, cx, cy, angle), fill=fill)
    else:
        raise ValueError(f'shape must be one of {list(CLASSES)}, got {kind!r}')


def make_class_image(rng: np.random.RandomState, kind: str, size: int) -> Image.Image:
    """One ``size`` x ``size`` RGB image of class ``kind``."""
    base = rng.randint(0, 256, size=3)
    noise = rng.randint(-40, 41, size=(size, size, 3))
    background = np.clip(base[None, None] * 0.5 + 64 + noise, 0, 255).astype(np.uint8)
    img = Image.fromarray(background, 'RGB')
    r = rng.uniform(0.25, 0.4) * size
    cx, cy = rng.uniform(r, size - r, size=2)
    angle = rng.uniform(0, math.pi)
    _draw_shape(ImageDraw.Draw(img), kind, cx, cy, r, angle, _colour(rng, CLASS_HUES[kind]))
    return img


def write_classification_set(root: str,
                             num_train: int = 40,
                             num_val: int = 20,
                             image_size: int = 40,
                             seed: int = 0,
                             classes: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """Write the demo classification set under ``root/cls`` (ImageNet folder layout).

    Args:
        root (str): The demo data root (``data/demo``); the set goes to ``root/cls``.
        num_train (int): Training images per class. Defaults to 40.
        num_val (int): Validation images per class. Defaults to 20.
        image_size (int): Side of the square images in pixels. Defaults to 40.
        seed (int): Random seed; the same seed writes the same files. Defaults to 0.
        classes (Sequence[str], optional): A subset of :data:`CLASSES`. Defaults to all six.

    Returns:
        dict: ``data_root`` and the ``train`` and ``val`` folders.

    Example:
        >>> paths = write_classification_set('data/demo')
        >>> paths['data_root']
        'data/demo/cls'
        >>> sorted(os.listdir(paths['train']))
        ['circle', 'cross', 'ring', 'square', 'stripes', 'triangle']
    """
    classes = tuple(CLASSES if classes is None else classes)
    unknown = [c for c in classes if c not in CLASSES]
    if unknown or not classes:
        raise ValueError(f'classes must be a non-empty subset of {list(CLASSES)}, got '
                         f'{list(classes)}')
    if num_train < 1 or num_val < 1:
        raise ValueError(f'num_train and num_val must be >= 1, got {num_train} and {num_val}')
    if image_size < 16:
        raise ValueError(f'image_size must be >= 16 pixels, got {image_size}')
    data_root = osp.join(root, 'cls')
    paths = dict(data_root=data_root)
    for split_idx, (split, count) in enumerate((('train', num_train), ('val', num_val))):
        split_dir = osp.join(data_root, split)
        for cls_idx, kind in enumerate(classes):
            # One stream per (split, class): adding classes does not change the others' images.
            rng = np.random.RandomState([seed, split_idx, CLASSES.index(kind)])
            cls_dir = osp.join(split_dir, kind)
            os.makedirs(cls_dir, exist_ok=True)
            for i in range(count):
                image = make_class_image(rng, kind, image_size)
                image.save(osp.join(cls_dir, f'{kind}_{i:04d}.png'))
        paths[split] = split_dir
    os.makedirs(osp.join(data_root, 'meta'), exist_ok=True)
    with open(osp.join(data_root, 'meta', 'classes.txt'), 'w') as f:
        f.write('\n'.join(classes) + '\n')
    return paths
