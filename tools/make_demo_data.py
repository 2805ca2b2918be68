"""Write the embedded demo data sets (deterministic): a classification set in ImageNet folder
layout under OUT/cls and a COCO instance-segmentation set under OUT/coco.

Example:
    python tools/make_demo_data.py --out data/demo
"""
import argparse

from kw_mm.demo_data.classification import write_classification_set
from kw_mm.demo_data.coco import write_coco_set


def main() -> None:
    parser = argparse.ArgumentParser(description='Write the kw_mm demo data sets')
    parser.add_argument('--out', default='data/demo', help='output root (default: data/demo)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default: 0)')
    args = parser.parse_args()
    cls = write_classification_set(args.out, seed=args.seed)
    print(f"classification set: {cls['data_root']} (ImageNet layout: train/, val/)")
    coco = write_coco_set(args.out, seed=args.seed)
    print(f"COCO set: {coco['data_root']} (annotations/instances_{{train,val}}.json)")


if __name__ == '__main__':
    main()
