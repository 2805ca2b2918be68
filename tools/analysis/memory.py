"""Memory per GPU of a config's training step and inference, before renting GPUs.

Measures a training step and an inference pass at two small batches on this machine, fits a
line through them and reads it at the config's per-GPU batch (or --batch), beside the paper's
Table 16 for the same models and as a ratio to the plain model. The measuring is described in
kw_mm/analysis/memory.py (CPU: torch.profiler's allocation events; CUDA:
torch.cuda.max_memory_allocated).

Examples:
    python tools/analysis/memory.py configs/kw1x-resnet50_8xb512-300e_in1k.py --device cuda
    python tools/analysis/memory.py configs/kw4x-resnet50_8xb512-300e_in1k.py --batch 128 \\
        --gpu-memory 24GB                         # does batch 128 fit a 24 GB GPU?
    python tools/analysis/memory.py --table16 --device cuda --markdown memory.md
                                                  # every Table 16 row, as markdown
    python tools/analysis/memory.py configs/*300e*.py --device cuda --annotate
                                                  # state the figures in the configs

--device cuda plans the KW layers' kernel assembly as a GPU does; without a CUDA device it is
measured on this CPU under that plan. Exit status 1 when a batch does not fit --gpu-memory.
"""
import argparse
import sys

import torch

from kw_mm.analysis.memory import (MB, PAPER_EVAL_BATCH, TABLE16_CONFIGS, annotate_config,
                                   config_note, fit_verdict, format_table, measure_memory,
                                   parse_memory)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Memory per GPU of training and inference')
    parser.add_argument('configs', nargs='*', help='mmpretrain config files')
    parser.add_argument('--table16', action='store_true',
                        help="every model of the paper's Table 16 (ResNet50 and MobileNetV2 "
                        'rows)')
    parser.add_argument('--batch', type=int, help='per-GPU training batch to estimate '
                        "(default: the config's train_dataloader.batch_size)")
    parser.add_argument('--eval-batch', type=int, default=PAPER_EVAL_BATCH,
                        help='inference batch to estimate (default: 100, as Table 16)')
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cpu',
                        help='the device to plan for (cuda: measured on a CUDA device if there '
                        'is one, else on this CPU under the GPU plan)')
    # Smaller batches are dominated by buffers that do not grow with the batch (a KW 4x
    # model's fixed-size kernel blocks): a line through them misreads the slope.
    parser.add_argument('--measure-batches', type=int, nargs=2, default=[8, 16],
                        metavar=('B1', 'B2'), help='the two batches measured (default 8 16)')
    parser.add_argument('--size', type=int, default=224, help='input side (default 224)')
    parser.add_argument('--gpu-memory', help='say whether the batch fits a GPU of this size '
                        '(24GB, 24576MB, or GB as a number)')
    parser.add_argument('--markdown', help='also write the table as markdown to this file')
    parser.add_argument('--annotate', action='store_true',
                        help="write each config's training memory per GPU into the config "
                        'file (its "# Memory per GPU" comment)')
    args = parser.parse_args()
    if not args.configs and not args.table16:
        parser.error('give config files or --table16')
    for name in ('batch', 'eval_batch', 'size'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name.replace("_", "-")} must be a positive integer, got {value}')
    if args.annotate and args.batch:
        parser.error(f'--annotate states the memory at each config\'s own batch; drop --batch '
                     f'{args.batch}')
    if len(set(args.measure_batches)) != 2 or min(args.measure_batches) < 1:
        parser.error('--measure-batches must be two different positive batch sizes, got '
                     f'{args.measure_batches}')
    if args.gpu_memory is not None:
        try:
            args.gpu_bytes = parse_memory(args.gpu_memory)
        except ValueError as err:
            parser.error(str(err))
    return args


def machine_header(device: str, plan: str) -> str:
    from kw_mm.cnn.cpu_caches import cpu_model
    where = torch.cuda.get_device_name() if device == 'cuda' else cpu_model()
    cuda = f', CUDA {torch.version.cuda}' if device == 'cuda' else ''
    return (f'memory per GPU, measured on {device} ({where}; torch {torch.__version__}{cuda}; '
            f'{torch.get_num_threads()} threads), kernels planned as: {plan}; MB = 2^20 bytes; '
            'tensors only (no CUDA context)')


def main() -> int:
    args = parse_args()
    from kw_mm.apis import load_config
    configs = list(args.configs) + (list(TABLE16_CONFIGS) if args.table16 else [])
    measure_on = 'cuda' if args.device == 'cuda' and torch.cuda.is_available() else 'cpu'
    results, batches, verdicts = [], {}, []
    for config in configs:
        cfg = load_config(config)
        loader = cfg.get('train_dataloader') or {}
        batch = args.batch or int(loader.get('batch_size') or 0) or None
        accumulation = int((cfg.get('optim_wrapper') or {}).get('accumulative_counts', 1))
        print(f'{config}: measuring at batches {args.measure_batches} ...', flush=True)
        result = measure_memory(config, args.measure_batches, args.size, measure_on,
                                plan_device=args.device)
        results.append(result)
        if batch:
            batches[result.name] = batch
            print(f'{result.name}: training at batch {batch}: '
                  f'{result.total("train", batch) / MB:,.0f} MB; inference at batch '
                  f'{args.eval_batch}: {result.total("eval", args.eval_batch) / MB:,.0f} MB',
                  flush=True)
            if args.annotate:
                annotate_config(config, config_note(result, batch))
            if args.gpu_memory is not None:
                verdict = fit_verdict(result, batch, args.gpu_bytes, accumulation)
                if verdict:
                    verdicts.append(verdict)
    header = machine_header(measure_on, results[0].plan)
    print(format_table(results, batches, args.eval_batch, header=header), flush=True)
    if args.markdown:
        with open(args.markdown, 'w') as f:
            f.write(format_table(results, batches, args.eval_batch, header=header,
                                 markdown=True) + '\n')
        print(f'markdown table: {args.markdown}')
    for verdict in verdicts:
        print(verdict, file=sys.stderr, flush=True)
    return 1 if verdicts else 0


if __name__ == '__main__':
    sys.exit(main())
