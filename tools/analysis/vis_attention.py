"""Mean KW attentions over a data set, one heat map per warehouse (the paper's Figure 3).

Rows are the linear mixtures of the warehouse's layers, columns its cells; each entry is the
attention averaged over every image. PNGs (matplotlib, Agg) and the matrices (``.npz``) are
written to ``--out``.

Example:
    python tools/analysis/vis_attention.py configs/demo/kw1x-resnet18_demo-cls.py \\
        work_dirs/demo_cls/epoch_6.pth --data data/demo/cls --out work_dirs/demo_cls/attention
"""
import argparse
import os
import os.path as osp
import re

import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmengine.runner import Runner, load_checkpoint

from kw_mm import set_temperature
from kw_mm.analysis.attention_maps import AttentionRecorder, plot_warehouse
from kw_mm.apis import build_model, register_toolbox
from kw_mm.engine import follow_checkpoint_schedule
from kw_mm.engine.hooks.kw_temperature_hook import temperature_hook_in
from kw_mm.runner.config_checks import check_cfg_options
from kw_mm.runner.launch import (check_checkpoint_file, check_data_roots, override_data_root,
                                use_safe_checkpoint_loader)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Heat maps of the mean KW attentions')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--data', help="data root of the images (replaces the config's "
                        'data_root; default: the config\'s test set)')
    parser.add_argument('--out', required=True, help='output directory')
    parser.add_argument('--max-images', type=int, default=None,
                        help='stop after this many images (default: all)')
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, key=value')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    check_checkpoint_file(args.checkpoint)
    if args.max_images is not None and args.max_images < 1:
        raise ValueError(f'--max-images must be >= 1, got {args.max_images}')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        check_cfg_options(cfg, args.cfg_options)
        cfg.merge_from_dict(args.cfg_options)
    if args.data:
        override_data_root(cfg, args.data)
    scope = register_toolbox(cfg)
    use_safe_checkpoint_loader()
    check_data_roots(cfg, ['test_dataloader'])
    model = build_model(cfg)
    checkpoint = load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)
    # The attentions the model was validated with: the t of the checkpoint's last training
    # iteration under the schedule of the run that saved it (its stored config when it has one,
    # else this config's; 0 after the anneal, for a released state dict and for configs without
    # the hook, such as fine-tuning).
    changed = follow_checkpoint_schedule(cfg, checkpoint, args.checkpoint)
    if changed:
        print(changed)
    hook = temperature_hook_in(cfg)
    t = hook.checkpoint_temperature(checkpoint) if hook is not None else None
    set_temperature(model, 0.0 if t is None else t)
    print(f'temperature t = {0.0 if t is None else t:g}')
    model.eval()

    loader_cfg = dict(cfg.test_dataloader)
    loader_cfg.update(batch_size=args.batch_size, num_workers=0, persistent_workers=False)
    loader = Runner.build_dataloader(loader_cfg)
    seen = 0
    with AttentionRecorder(model) as recorder, torch.no_grad():
        for batch in loader:
            data = model.data_preprocessor(batch, False)
            inputs = data['inputs']
            if args.max_images is not None:
                inputs = inputs[:args.max_images - seen]
            if scope == 'mmdet':
                model.extract_feat(inputs)  # KW layers live in the backbone
            else:
                model(inputs, mode='tensor')
            seen += inputs.shape[0]
            if args.max_images is not None and seen >= args.max_images:
                break

    os.makedirs(args.out, exist_ok=True)
    arrays = {}
    for idx, (name, wh) in enumerate(recorder.warehouses().items()):
        safe = re.sub(r'[^A-Za-z0-9_.-]+', '_', name)
        path = osp.join(args.out, f'warehouse{idx:02d}_{safe}.png')
        plot_warehouse(wh, path, title=f'warehouse {name}: mean attention over {seen} images')
        arrays[name] = wh.mean()
        print(f'{path}  (m={arrays[name].shape[0]}, n={arrays[name].shape[1]})')
    np.savez(osp.join(args.out, 'mean_attention.npz'), **arrays)
    print(f'averaged over {seen} images; matrices in {osp.join(args.out, "mean_attention.npz")}')


if __name__ == '__main__':
    main()
