"""A small deterministic COCO-format instance-segmentation set for the detection demo.

Every image holds a few non-overlapping filled shapes (circles, squares, triangles; each shape
is one class, its colour is random) on a noisy background. Each object is drawn from the very
polygon that is stored as its mask, so boxes and masks are exact. The same ``seed`` always
writes the same files.

Layout written under ``root`` (``data/demo`` in ``make demo``)::

    root/coco/train/train_0000.png ...
    root/coco/val/val_0000.png ...
    root/coco/annotations/instances_train.json
    root/coco/annotations/instances_val.json
"""
import json
import math
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

#: Category names, in category-id order (ids start at 1 as in COCO).
CLASSES: Tuple[str, ...] = ('circle', 'square', 'triangle')
#: Image sizes (width, height) drawn at random for each image.
IMAGE_SIZES: Tuple[Tuple[int, int], ...] = ((160, 128), (128, 160), (144, 144))
#: Side length range of a shape's bounding square, in pixels.
SHAPE_SIZE = (28, 60)

Polygon = List[Tuple[float, float]]


def _shape_polygon(kind: str, cx: float, cy: float, size: float, angle: float) -> Polygon:
    """Vertices of a shape centred at (cx, cy) that fits in a ``size`` square."""
    r = size / 2
    if kind == 'circle':
        return [(cx + r * math.cos(2 * math.pi * k / 32), cy + r * math.sin(2 * math.pi * k / 32))
                for k in range(32)]
    if kind == 'square':
        # A rotated square whose corners stay inside the bounding square of side ``size``.
        half = r / (abs(math.cos(angle)) + abs(math.sin(angle)))
        corners = [(-half, -half), (half, -half), (half, half), (-half, half)]
    elif kind == 'triangle':
        corners = [(r * math.cos(a), r * math.sin(a))
                   for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    else:
        raise ValueError(f'shape must be one of {list(CLASSES)}, got {kind!r}')
    if kind == 'triangle':
        angle = angle / 4  # only a small tilt: triangles stay recognisable as pointing up
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in corners]


def _polygon_area(poly: Polygon) -> float:
    """Shoelace formula."""
    s = 0.0
    for (x0, y0), (x1, y1) in zip(poly, poly[1:] + poly[:1]):
        s += x0 * y1 - x1 * y0
    return abs(s) / 2


def _overlaps(box: Sequence[float], boxes: Sequence[Sequence[float]], margin: float) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 < b[2] + margin and b[0] < x1 + margin and y0 < b[3] + margin
               and b[1] < y1 + margin for b in boxes)


def _background(rng: np.random.RandomState, width: int, height: int) -> np.ndarray:
    """A smooth colour gradient plus pixel noise, so that the background is not one colour."""
    c0, c1 = rng.uniform(60, 200, size=(2, 3))
    ramp = np.linspace(0, 1, width)[None, :, None]
    img = c0 + (c1 - c0) * ramp + rng.normal(0, 8, size=(height, width, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_scene_image(rng: np.random.RandomState,
                     max_objects: int = 3) -> Tuple[Image.Image, List[dict]]:
    """Draw one image; returns it and its objects (category index, polygon, box)."""
    width, height = IMAGE_SIZES[rng.randint(len(IMAGE_SIZES))]
    img = Image.fromarray(_background(rng, width, height))
    draw = ImageDraw.Draw(img)
    objects: List[dict] = []
    boxes: List[List[float]] = []
    wanted = rng.randint(1, max_objects + 1)
    for _ in range(50):  # rejection sampling of non-overlapping places
        if len(objects) == wanted:
            break
        label = rng.randint(len(CLASSES))
        size = rng.uniform(*SHAPE_SIZE)
        cx = rng.uniform(size / 2 + 1, width - size / 2 - 1)
        cy = rng.uniform(size / 2 + 1, height - size / 2 - 1)
        angle = rng.uniform(0, math.pi / 2)
        colour = tuple(int(c) for c in rng.randint(0, 256, size=3))
        poly = _shape_polygon(CLASSES[label], cx, cy, size, angle)
        xs, ys = [p[0] for p in poly], [p[1] for p in poly]
        box = [min(xs), min(ys), max(xs), max(ys)]
        if _overlaps(box, boxes, margin=3):
            continue
        # Keep the shape visible against its background: push a too-similar colour away.
        under = np.asarray(img)[int(cy), int(cx)].astype(int)
        if np.abs(np.array(colour) - under).sum() < 150:
            colour = tuple(int(255 - c) for c in under)
        draw.polygon(poly, fill=colour)
        boxes.append(box)
        objects.append(dict(label=label, polygon=poly, box=box))
    return img, objects


def _annotation(obj: dict, ann_id: int, image_id: int) -> dict:
    x0, y0, x1, y1 = obj['box']
    flat = [round(v, 2) for p in obj['polygon'] for v in p]
    return dict(id=ann_id, image_id=image_id, category_id=obj['label'] + 1,
                segmentation=[flat], area=round(_polygon_area(obj['polygon']), 2),
                bbox=[round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                iscrowd=0)


def write_coco_set(root: str,
                   num_train: int = 96,
                   num_val: int = 24,
                   seed: int = 0,
                   max_objects: int = 3) -> Dict[str, str]:
    """Write the demo COCO instance set under ``root/coco``.

    Args:
        root (str): The demo data root (``data/demo``); the set goes to ``root/coco``.
        num_train (int): Training images. Defaults to 96.
        num_val (int): Validation images. Defaults to 24.
        seed (int): Random seed; the same seed writes the same files. Defaults to 0.
        max_objects (int): Most objects in one image (at least one). Defaults to 3.

    Returns:
        dict: ``data_root`` and, per split, its image folder and annotation file.

    Example:
        >>> paths = write_coco_set('data/demo')
        >>> paths['val_ann']
        'data/demo/coco/annotations/instances_val.json'
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(f'num_train and num_val must be >= 1, got {num_train} and {num_val}')
    if max_objects < 1:
        raise ValueError(f'max_objects must be >= 1, got {max_objects}')
    data_root = osp.join(root, 'coco')
    ann_dir = osp.join(data_root, 'annotations')
    os.makedirs(ann_dir, exist_ok=True)
    categories = [dict(id=i + 1, name=name, supercategory='shape')
                  for i, name in enumerate(CLASSES)]
    paths = dict(data_root=data_root)
    for split, count, split_seed in (('train', num_train, seed), ('val', num_val, seed + 1)):
        rng = np.random.RandomState(split_seed)
        img_dir = osp.join(data_root, split)
        os.makedirs(img_dir, exist_ok=True)
        images, annotations = [], []
        for idx in range(count):
            img, objects = make_scene_image(rng, max_objects)
            file_name = f'{split}_{idx:04d}.png'
            img.save(osp.join(img_dir, file_name))
            image_id = idx + 1
            images.append(dict(id=image_id, file_name=file_name, width=img.width,
                               height=img.height))
            for obj in objects:
                annotations.append(_annotation(obj, len(annotations) + 1, image_id))
        ann_file = osp.join(ann_dir, f'instances_{split}.json')
        with open(ann_file, 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories), f,
                      sort_keys=True)
        paths[f'{split}_img'] = img_dir
        paths[f'{split}_ann'] = ann_file
    return paths


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``python -m kw_mm.demo_data.coco OUT`` writes the set under ``OUT/coco``."""
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('root', nargs='?', default='data/demo', help='demo data root')
    args = parser.parse_args(argv)
    paths = write_coco_set(args.root)
    print(f"demo COCO set written to {paths['data_root']}")


if __name__ == '__main__':
    main()
