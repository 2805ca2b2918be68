"""--auto-scale-lr: the lr follows processes x per-process batch x accumulation; a config
without auto_scale_lr is refused in one line; mmengine's own scaling stays off."""
import pytest
from mmengine.config import Config

from kw_mm.runner.scale_lr import (apply_auto_scale_lr, launched_processes, lr_summary,
                                   total_batch)

from tests.helpers import REPO_ROOT

R50_KW = f'{REPO_ROOT}/configs/kw1x-resnet50_8xb512-300e_in1k.py'


def test_total_batch_counts_processes_batch_and_accumulation():
    cfg = Config.fromfile(R50_KW)
    assert total_batch(cfg, 8).size == 4096
    cfg.merge_from_dict({'train_dataloader.batch_size': 128,
                         'optim_wrapper.accumulative_counts': 4})
    batch = total_batch(cfg, 8)
    assert (batch.size, str(batch)) == (4096, '4096 = 8 processes x 128 per process x 4 '
                                        'accumulated')


@pytest.mark.parametrize('processes,batch,accumulation,lr', [
    (8, 512, 1, 4e-3), (8, 128, 4, 4e-3), (1, 512, 1, 5e-4), (2, 256, 1, 5e-4),
    (4, 128, 2, 1e-3)])
def test_lr_scales_linearly(processes, batch, accumulation, lr):
    cfg = Config.fromfile(R50_KW)
    cfg.merge_from_dict({'train_dataloader.batch_size': batch,
                         'optim_wrapper.accumulative_counts': accumulation})
    line = apply_auto_scale_lr(cfg, processes, 'c.py')
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(lr)
    assert cfg.auto_scale_lr.enable is False  # mmengine must not scale it a second time
    assert line.startswith(f'lr {lr:.6g} (--auto-scale-lr: 0.004 x '
                           f'{processes * batch * accumulation}/4096')


def test_config_without_auto_scale_lr_is_refused_in_one_line():
    cfg = Config(dict(train_dataloader=dict(batch_size=16),
                      optim_wrapper=dict(optimizer=dict(type='AdamW', lr=2e-3))))
    with pytest.raises(ValueError) as err:
        apply_auto_scale_lr(cfg, 1, 'configs/demo/kw1x-resnet18_demo-cls.py')
    message = str(err.value)
    assert '\n' not in message
    assert message.startswith('--auto-scale-lr: configs/demo/kw1x-resnet18_demo-cls.py has no '
                              'auto_scale_lr.base_batch_size')
    assert 'auto_scale_lr = dict(base_batch_size=N)' in message
    assert cfg.optim_wrapper.optimizer.lr == 2e-3


def test_header_without_the_flag_names_the_lr_and_the_scaled_one():
    cfg = Config.fromfile(R50_KW)
    assert lr_summary(cfg, 8) == 'lr 0.004; total batch 4096 = 8 processes x 512 per process'
    assert lr_summary(cfg, 2).endswith('(the lr is for a total batch of 4096: --auto-scale-lr '
                                       'scales it to 0.001)')


def test_processes_come_from_the_launcher():
    assert launched_processes('none', {'WORLD_SIZE': '4'}) == 1
    assert launched_processes('pytorch', {'WORLD_SIZE': '4'}) == 4
    assert launched_processes('slurm', {'SLURM_NTASKS': '16'}) == 16
    assert launched_processes('pytorch', {}) == 1
