"""Operation profiles of PyTorch steps, eager and compiled (kw_mm.analysis.op_profile)."""
import torch

from kw_mm.analysis.op_profile import GENERATED_CODE, format_op_profile, torch_op_profile


def test_eager_profile_counts_calls_per_step():
    a = torch.randn(256, 256, generator=torch.Generator().manual_seed(0))

    def step():
        return (a @ a).relu() @ a

    rows = torch_op_profile(step, rounds=3, top=10)
    mm = next(r for r in rows if r.name == 'aten::mm')
    assert mm.calls == 2 and rows[0].name == 'aten::mm'
    assert abs(sum(r.share for r in torch_op_profile(step, top=100)) - 1) < 1e-6
    assert format_op_profile(rows[:1]).startswith('aten::mm ') and '(2 calls)' in \
        format_op_profile(rows[:1])


def test_inductor_code_is_one_named_entry():
    torch._dynamo.reset()
    fn = torch.compile(lambda x: (x.sin() * 2).cos().sum(), backend='inductor')
    x = torch.randn(4096, generator=torch.Generator().manual_seed(0))
    fn(x)  # compiles
    names = [r.name for r in torch_op_profile(lambda: fn(x), top=100)]
    assert GENERATED_CODE in names
    assert not any('CompiledFxGraph' in name for name in names)
    torch._dynamo.reset()
