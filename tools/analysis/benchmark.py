"""Speed and memory of KW models against their plain twins, or of single KW layers.

Models are mmpretrain configs or paper variant names; a KW model is compared with its plain
twin (``configs/kw1x-resnet18_8xb32_in1k.py`` -> ``configs/resnet18_8xb32_in1k.py``,
``kw4x_resnet18`` -> ``resnet18``, or ``KW:PLAIN`` explicitly), interleaved, medians over
repetitions. The measuring code is in ``kw_mm/analysis/`` (``benchmark.py`` side by side,
``measure.py`` timing and memory, ``machine_report.py``, ``limit.py``, ``report.py``); the
presets and the targets ``make bench`` is held to are in ``benchmark_presets.py`` beside this
tool.

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
    # ... and on a GPU (its memory budget per block), planned from this machine
    python tools/analysis/benchmark.py --explain --plan-as cuda --batch 128 \
        configs/kw1x-resnet50_8xb512-300e_in1k.py
    # also measure with one core kept busy by a competing process
    python tools/analysis/benchmark.py --preset paper-cpu --load
    # the exported models (ONNX, symbolic batch) in onnxruntime, KW vs plain and vs PyTorch eager
    python tools/analysis/benchmark.py --preset paper-cpu --onnx
    python tools/analysis/benchmark.py --onnx configs/kw1x-resnet18_8xb32_in1k.py \
        --ort-optimization basic --onnx-dir work_dirs/onnx
    # compiled KW vs compiled plain (torch.compile, inductor), beside both in eager
    python tools/analysis/benchmark.py --preset paper-cpu --compile
    python tools/analysis/benchmark.py --compile configs/kw1x-resnet18_8xb32_in1k.py \
        --metrics eval_b1,eval_bN
    # what mixed precision costs KW: training steps under autocast (bfloat16 on a CPU) at
    # t = 0.5 (the anneal: split attentions) and t = 0, beside the plain twin and float32
    python tools/analysis/benchmark.py --amp configs/kw1x-resnet18_8xb32_in1k.py
    # side by side: plain (first), DY-Conv, ODConv, CondConv, KW, KW* in one interleaved run
    python tools/analysis/benchmark.py --side-by-side rivals-mobilenet-v2
    python tools/analysis/benchmark.py --side-by-side configs/resnet18_8xb32_in1k.py \
        configs/dyconv4x-resnet18_8xb32_in1k.py configs/kw1x-resnet18_8xb32_in1k.py

Every table is headed by the machine: CPU model, cache sizes, threads and the GEMM rate measured
at the start, from which the limit columns are computed (kw_mm/analysis/limit.py).
"""
import argparse
import json
import os.path as osp
import sys
import time

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # benchmark_presets, beside this tool
from benchmark_presets import (COMPILE_TARGETS, ONNX_TARGETS, PRESETS,  # noqa: E402
                               SIDE_BY_SIDE_PRESETS, TARGETS)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n', 1)[1])
    parser.add_argument('models', nargs='*',
                        help='KW configs or paper variants, optionally KW:PLAIN')
    parser.add_argument('--preset', choices=sorted(PRESETS), help='a predefined set and settings')
    parser.add_argument('--layer', help='one KW layer: CIN,COUT,K[,STRIDE[,GROUPS]]')
    parser.add_argument('--side-by-side', nargs='+', metavar='MODEL',
                        help='a preset (rivals-resnet50, rivals-mobilenet-v2, rivals-resnet18) '
                        'or configs, the plain one first: every model in one interleaved run')
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
    parser.add_argument('--metrics',
                        help='comma-separated subset of eval_b1,eval_bN,train (default all; '
                        '--amp: train)')
    parser.add_argument('--with-reference', action='store_true',
                        help="also time the KW models' straightforward implementation")
    parser.add_argument('--no-memory', action='store_true', help='skip peak memory')
    parser.add_argument('--no-flops', action='store_true',
                        help='skip the FLOP count (and so the limits)')
    parser.add_argument('--explain', action='store_true',
                        help='print the fast path and blocks of every KW layer and why; no '
                        'timing')
    parser.add_argument('--kw-impl', default='auto',
                        help="how every KW layer runs: 'auto' (its plan), 'reference', "
                        "'export' or a fast path's name (forced where it applies)")
    parser.add_argument('--threshold', action='append', default=[], metavar='NAME=VALUE',
                        help='plan with a threshold of kw_mm.cnn.plan.Thresholds changed (to '
                        're-derive it by timing both sides); repeatable')
    parser.add_argument('--plan-as', metavar='DEVICE_TYPE',
                        help='--explain: plan as this device type would (cuda: its memory '
                        'budget per block), whatever device runs the tool')
    parser.add_argument('--load', type=int, nargs='?', const=1, default=0, metavar='CORES',
                        help='also measure eval at batch N with CORES (default 1) cores kept '
                        'busy by competing processes, and report the ratio to the quiet run')
    parser.add_argument('--no-limit', action='store_true',
                        help='skip the limits (plain conv + assembly at the GEMM rate + '
                        'attention)')
    parser.add_argument('--onnx', action='store_true',
                        help='export the KW models and their plain twins to ONNX (symbolic '
                        'batch) and time them in onnxruntime beside PyTorch eager, batch 1 and N '
                        "(default models: the preset's onnx_pairs)")
    parser.add_argument('--ort-optimization', default='all',
                        choices=['disable', 'basic', 'extended', 'all'],
                        help="--onnx: onnxruntime's graph optimization level (default all)")
    parser.add_argument('--onnx-dir', help='--onnx: keep the exported files in this folder')
    parser.add_argument('--compile', action='store_true',
                        help='time the KW models and their plain twins compiled by '
                        'torch.compile beside both in eager, with the compile times (default '
                        "models: the preset's compile_pairs)")
    parser.add_argument('--compile-backend', default='inductor',
                        help="--compile: torch.compile's backend (default inductor)")
    parser.add_argument('--amp', action='store_true',
                        help='time the KW models and their plain twins under autocast at t = '
                        '0.5 and 0, beside both in float32; --metrics defaults to train here '
                        "(default models: the preset's amp_pairs)")
    parser.add_argument('--amp-dtype', default='bfloat16',
                        choices=['bfloat16', 'bf16', 'float16', 'fp16'],
                        help='--amp: the autocast dtype (default bfloat16)')
    parser.add_argument('--json', help='write the results to this JSON file')
    parser.add_argument('--markdown', metavar='FILE',
                        help='also write the printed tables (with the machine header) to this '
                        'markdown file, for docs/speed_and_memory.md')
    return parser.parse_args()


def metrics(args: argparse.Namespace, default: str = 'eval_b1,eval_bN,train') -> list:
    """The metrics ``--metrics`` names, else ``default``."""
    return [m for m in (args.metrics or default).split(',') if m]


def parse_thresholds(items) -> dict:
    """``['min_batch=2', ...]`` -> ``{'min_batch': 2, ...}`` (int or float values)."""
    from kw_mm.cnn.plan import Thresholds
    names = list(Thresholds.__dataclass_fields__)
    changes = {}
    for item in items:
        name, _, value = item.partition('=')
        if name not in names:
            sys.exit(f'--threshold: {name!r} is not a threshold; choose from {", ".join(names)}')
        try:
            changes[name] = int(value) if value.lstrip('-').isdigit() else float(value)
        except ValueError:
            sys.exit(f'--threshold wants NAME=NUMBER, got {item!r}')
    return changes


def main() -> None:
    args = parse_args()
    from kw_mm.cnn.fast import use_kw_impl
    from kw_mm.cnn.plan import KW_IMPLS, using_thresholds
    if args.kw_impl not in KW_IMPLS:
        sys.exit(f'--kw-impl must be one of {", ".join(KW_IMPLS)}, got {args.kw_impl!r}')
    with using_thresholds(**parse_thresholds(args.threshold)), use_kw_impl(args.kw_impl):
        run(args)


def run(args: argparse.Namespace) -> None:
    from kw_mm.analysis import benchmark as bm
    from kw_mm.analysis import measure
    preset = PRESETS[args.preset] if args.preset else {}
    threads = args.threads or preset.get('threads', 2)
    batch = args.batch or preset.get('batch', 8)
    torch.set_num_threads(threads)
    measure.set_clock(args.clock)
    measure.set_allocator(args.allocator)
    start = time.time()
    report = dict(environment=measure.environment(), args=vars(args))
    tables = []  # what --markdown writes
    pairs = [bm.parse_pair(m) for m in args.models] or preset.get('pairs', [])

    if args.layer:
        parts = [int(v) for v in args.layer.split(',')]
        if not 3 <= len(parts) <= 5:
            sys.exit(f'--layer wants CIN,COUT,K[,STRIDE[,GROUPS]], got {args.layer!r}')
        cin, cout, k, stride, groups = (parts + [1, 1])[:5]
    if args.explain:
        from kw_mm.analysis.bench_session import explain_layer_spec, explain_models
        if args.layer:
            print(explain_layer_spec(cin, cout, k, args.size or 14, batch, stride, groups,
                                     args.budget, args.plan_as))
            return
        specs = [kw for kw, _ in pairs] or ([args.layer_profile] if args.layer_profile else [])
        if not specs:
            sys.exit('--explain needs models, --preset, --layer or --layer-profile MODEL')
        print(explain_models(specs, batch, args.size or 224, args.plan_as))
        return
    if args.onnx:
        from kw_mm.analysis import onnx_runtime_bench as ob
        pairs = [bm.parse_pair(m) for m in args.models] or preset.get('onnx_pairs', [])
        if not pairs:
            sys.exit('--onnx needs models or --preset (see --help)')
        session = ob.run_onnx_session(pairs, threads, batch, args.size or 224, args.reps,
                                      args.warmup, args.ort_optimization, args.onnx_dir,
                                      log=lambda text: print(text, flush=True))
        print()
        tables.append(ob.format_onnx_session(session, ONNX_TARGETS))
        print(tables[-1])
        report.update(ob.onnx_session_to_dict(session))
    elif args.amp:
        from kw_mm.analysis import amp_bench as ab
        pairs = [bm.parse_pair(m) for m in args.models] or preset.get('amp_pairs', [])
        if not pairs:
            sys.exit('--amp needs models or --preset (see --help)')
        session = ab.run_amp_session(pairs, threads, batch, args.size or 224, args.reps,
                                     args.warmup, metrics(args, 'train'), args.amp_dtype,
                                     log=lambda text: print(text, flush=True))
        print()
        tables.append(ab.format_amp_session(session))
        print(tables[-1])
        report.update(ab.amp_session_to_dict(session))
    elif args.compile:
        from kw_mm.analysis import compiled_bench as cb
        pairs = [bm.parse_pair(m) for m in args.models] or preset.get('compile_pairs', [])
        if not pairs:
            sys.exit('--compile needs models or --preset (see --help)')
        session = cb.run_compiled_session(pairs, threads, batch, args.size or 224, args.reps,
                                          args.warmup, metrics(args),
                                          args.compile_backend,
                                          log=lambda text: print(text, flush=True))
        print()
        tables.append(cb.format_compiled_session(session, COMPILE_TARGETS))
        print(tables[-1])
        report.update(cb.compiled_session_to_dict(session))
    elif args.layer:
        row = bm.benchmark_layer(cin, cout, k, args.size or 14, batch, stride, groups, args.bias,
                                 args.budget, max(args.reps, 5), args.warmup, args.channels_last)
        from kw_mm.analysis.report import format_layer_rows
        print(format_layer_rows([row]))
        report['layers'] = [row]
    elif args.side_by_side:
        from kw_mm.analysis.report import format_side_by_side
        models = args.side_by_side
        if len(models) == 1 and models[0] in SIDE_BY_SIDE_PRESETS:
            models = SIDE_BY_SIDE_PRESETS[models[0]]
        elif len(models) == 1:
            sys.exit(f'--side-by-side wants a preset {sorted(SIDE_BY_SIDE_PRESETS)} or two or '
                     f'more models (the plain one first), got {models}')
        from kw_mm.analysis.machine_report import machine_report
        machine = machine_report(threads)
        print(f'side by side, {models[0]} as the plain model (threads={threads}, '
              f'batch={batch})', flush=True)
        result = bm.benchmark_side_by_side(
            models, batch, args.size or 224, args.reps, args.warmup,
            metrics(args), not args.no_memory)
        tables.append(machine.header() + '\n\n' + format_side_by_side(result))
        print('\n' + tables[-1])
        report.update(machine=machine.to_dict(), side_by_side=result.to_dict())
    elif args.layer_profile:
        from kw_mm.analysis import limit as lm
        from kw_mm.analysis.machine_report import machine_report
        from kw_mm.analysis.report import format_layer_limits
        machine = machine_report(threads)
        rows = lm.profile_limits(args.layer_profile, machine.gemm_flops, batch,
                                 args.size or 224, args.reps, args.warmup, args.with_reference,
                                 machine.memory_bandwidth)
        tables.append(machine.header() + '\n\n' + format_layer_limits(rows))
        print(tables[-1])
        report.update(machine=machine.to_dict(), layer_profile=rows)
    else:
        if not pairs:
            sys.exit('give models, --preset, --layer or --layer-profile (see --help)')
        from kw_mm.analysis.bench_session import run_session, session_to_dict
        from kw_mm.analysis.report import format_session
        session = run_session(pairs, threads, batch, args.size or 224, args.reps, args.warmup,
                              metrics(args), args.with_reference,
                              not args.no_memory, not args.no_limit and not args.no_flops,
                              args.load, log=lambda text: print(text, flush=True))
        print()
        tables.append(format_session(session, TARGETS))
        print(tables[-1])
        report.update(session_to_dict(session))
    if args.markdown and tables:
        with open(args.markdown, 'w') as f:
            f.write('\n\n'.join(tables) + '\n')
        print(f'tables written to {args.markdown}')
    report['environment_end'] = measure.environment()
    report['seconds'] = time.time() - start
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=1)


if __name__ == '__main__':
    main()
