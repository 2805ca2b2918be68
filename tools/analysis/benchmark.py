"""Speed and memory of KW models against their plain twins, or of single KW layers.

Models are mmpretrain configs or paper variant names; a KW model is compared with its plain
twin (``configs/kw1x-resnet18_8xb32_in1k.py`` -> ``configs/resnet18_8xb32_in1k.py``,
``kw4x_resnet18`` -> ``resnet18``, or ``KW:PLAIN`` explicitly), interleaved, medians over
repetitions. The measuring code is in ``kw_mm/analysis/benchmark.py``.

Examples:
    # the issue's target set (2 threads, batch 8, 224x224), as `make bench` runs it
    python tools/analysis/benchmark.py --preset paper-cpu --json bench.json
    # any configs or variants
    python tools/analysis/benchmark.py configs/kw1x-resnet18_8xb32_in1k.py kw1x_resnet50
    # one KW layer against nn.Conv2d of the same shape and the straightforward implementation
    python tools/analysis/benchmark.py --layer 256,256,3 --size 14 --batch 8
    # every KW layer of a model, timed alone against its limit (where the ratio comes from)
    python tools/analysis/benchmark.py --layer-profile kw1x_resnet18
    # which fast path and blocks every KW layer gets on this machine, and why (no timing)
    python tools/analysis/benchmark.py --explain configs/kw1x-resnet18_8xb32_in1k.py
    # also measure with one core kept busy by a competing process
    python tools/analysis/benchmark.py --preset paper-cpu --load

Every table is headed by the machine: CPU model, cache sizes, threads and the GEMM rate measured
at the start, from which the limit columns are computed (kw_mm/analysis/limit.py).
"""
import argparse
import json
import sys
import time

import torch


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n', 1)[1])
    parser.add_argument('models', nargs='*',
                        help='KW configs or paper variants, optionally KW:PLAIN')
    parser.add_argument('--preset', choices=['paper-cpu'], help='a predefined set and settings')
    parser.add_argument('--layer', help='one KW layer: CIN,COUT,K[,STRIDE[,GROUPS]]')
    parser.add_argument('--layer-profile', metavar='MODEL',
                        help='time every KW layer of MODEL alone against a plain conv')
    parser.add_argument('--budget', type=float, default=1.0, help='--layer: warehouse budget b')
    parser.add_argument('--bias', action='store_true', help='--layer: with bias')
    parser.add_argument('--channels-last', action='store_true', help='--layer: NHWC input')
    parser.add_argument('--batch', type=int, help='batch N (default 8)')
    parser.add_argument('--size', type=int, help='input size (default 224; --layer: 14)')
    parser.add_argument('--threads', type=int, help='torch threads (default 2)')
    parser.add_argument('--allocator', choices=['warm', 'system'], default='warm',
                        help="warm: malloc keeps freed memory (steady state, the same for "
                        "every model whatever ran before); system: glibc's defaults")
    parser.add_argument('--clock', choices=['wall', 'cpu'], default='wall',
                        help='wall time, or process CPU time (steadier on a busy machine)')
    parser.add_argument('--reps', type=int, default=10, help='timed rounds per metric')
    parser.add_argument('--warmup', type=int, default=2, help='untimed rounds first')
    parser.add_argument('--metrics', default='eval_b1,eval_bN,train',
                        help='comma-separated subset of eval_b1,eval_bN,train')
    parser.add_argument('--with-reference', action='store_true',
                        help="also time the KW models' straightforward implementation")
    parser.add_argument('--no-memory', action='store_true', help='skip peak memory')
    parser.add_argument('--no-flops', action='store_true', help='skip the FLOP count')
    parser.add_argument('--explain', action='store_true',
                        help='print the fast path and blocks of every KW layer and why; no '
                        'timing')
    parser.add_argument('--load', type=int, nargs='?', const=1, default=0, metavar='CORES',
                        help='also measure eval at batch N with CORES (default 1) cores kept '
                        'busy by competing processes, and report the ratio to the quiet run')
    parser.add_argument('--no-limit', action='store_true',
                        help='skip the limits (plain conv + assembly at the GEMM rate + '
                        'attention)')
    parser.add_argument('--json', help='write the results to this JSON file')
    return parser.parse_args()


def explain(specs, batch: int, size: int) -> str:
    """The fast path plan of every KW layer of every model in ``specs``."""
    from kw_mm.analysis import benchmark as bm
    from kw_mm.cnn.explain import explain_model, format_explanation
    texts = []
    for spec in specs:
        model = bm.build_spec(bm.load_spec(spec)).eval()
        plans = explain_model(model, torch.randn(batch, 3, size, size))
        texts.append(f'# {spec} (batch {batch}, {size}x{size})\n' + format_explanation(plans))
    return '\n\n'.join(texts)


def run_pairs(args, pairs, threads: int, batch: int, report: dict) -> None:
    """Benchmark the pairs, their limits and (with --load) their ratios under load."""
    from kw_mm.analysis import benchmark as bm
    from kw_mm.analysis import limit as lm
    from kw_mm.analysis.machine import competing_load, machine_report
    size = args.size or 224
    machine = machine_report(threads)
    print(machine.header(), flush=True)
    metrics = [m for m in args.metrics.split(',') if m]
    results, limits, loads = [], {}, {}
    for i, (kw, plain) in enumerate(pairs, 1):
        print(f'[{i}/{len(pairs)}] {kw} vs {plain} (threads={threads}, batch={batch})',
              flush=True)
        result = bm.benchmark_pair(kw, plain, batch, size, args.reps, args.warmup, metrics,
                                   args.with_reference, not args.no_memory,
                                   not args.no_flops and not args.no_limit)
        results.append(result)
        if not args.no_limit:
            print('  limits: every KW layer alone', flush=True)
            limits[result.kw] = lm.pair_limits(kw, result, machine.gemm_flops, batch, size)
        if args.load:
            print(f'  eval_bN with {args.load} busy core(s)', flush=True)
            with competing_load(args.load):
                loaded = bm.benchmark_pair(kw, plain, batch, size, args.reps, args.warmup,
                                           ['eval_bN'], memory=False, flops=False,
                                           log=lambda text: None)
            loads[result.kw] = lm.load_ratios(result, loaded)
            report.setdefault('loaded', []).append(loaded.to_dict())
    print()
    print(machine.header())
    print()
    print(bm.format_pairs(results, batch))
    if limits:
        print('\nLimits (plain + assembly at the GEMM rate + attention; train: assembly and '
              f'attention x{lm.TRAIN_FACTOR}):\n')
        print(lm.format_model_limits(limits, batch))
        for name, lim in limits.items():
            print(f'\nKW layers of {name}, eval, batch {batch}:\n')
            print(lm.format_layer_limits(lim['layers']))
    if loads:
        print(f'\nUnder load ({args.load} busy core(s)), eval b{batch}, KW/plain loaded / '
              'quiet: ' + ', '.join(f"{k} {v['eval_bN']:.2f}x" for k, v in loads.items()
                                    if 'eval_bN' in v))
    print('\nTargets:')
    print(lm.target_report(results, limits, batch, loads))
    report.update(machine=machine.to_dict(), pairs=[r.to_dict() for r in results],
                  limits=limits, loads=loads)


def main() -> None:
    args = parse_args()
    from kw_mm.analysis import benchmark as bm
    preset = bm.PRESETS[args.preset] if args.preset else {}
    threads = args.threads or preset.get('threads', 2)
    batch = args.batch or preset.get('batch', 8)
    torch.set_num_threads(threads)
    bm.set_clock(args.clock)
    bm.set_allocator(args.allocator)
    start = time.time()
    report = dict(environment=bm.environment(), args=vars(args))
    pairs = [bm.parse_pair(m) for m in args.models] or preset.get('pairs', [])

    if args.explain:
        specs = [kw for kw, _ in pairs] or ([args.layer_profile] if args.layer_profile else [])
        if not specs:
            sys.exit('--explain needs models, --preset or --layer-profile MODEL')
        print(explain(specs, batch, args.size or 224))
        return
    if args.layer:
        parts = [int(v) for v in args.layer.split(',')]
        if not 3 <= len(parts) <= 5:
            sys.exit(f'--layer wants CIN,COUT,K[,STRIDE[,GROUPS]], got {args.layer!r}')
        cin, cout, k, stride, groups = (parts + [1, 1])[:5]
        row = bm.benchmark_layer(cin, cout, k, args.size or 14, batch, stride, groups, args.bias,
                                 args.budget, max(args.reps, 5), args.warmup, args.channels_last)
        print(bm.format_layer_rows([row]))
        report['layers'] = [row]
    elif args.layer_profile:
        from kw_mm.analysis import limit as lm
        from kw_mm.analysis.machine import machine_report
        machine = machine_report(threads)
        rows = lm.profile_limits(args.layer_profile, machine.gemm_flops, batch,
                                 args.size or 224, args.reps, args.warmup, args.with_reference)
        print(machine.header() + '\n')
        print(lm.format_layer_limits(rows))
        report.update(machine=machine.to_dict(), layer_profile=rows)
    else:
        if not pairs:
            sys.exit('give models, --preset, --layer or --layer-profile (see --help)')
        run_pairs(args, pairs, threads, batch, report)
    report['environment_end'] = bm.environment()
    report['seconds'] = time.time() - start
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=1)


if __name__ == '__main__':
    main()
