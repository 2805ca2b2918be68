"""Start-up without reading the data set: a training run opens no more files of a set of
20,000 hard-linked images before its first iteration than of a small one; an unreadable image
is named (path and dataset index) when the loader meets it; tools/misc/verify_dataset.py finds
every one, split across processes."""
import os
import os.path as osp
import sys

import pytest
from mmengine.registry import TRANSFORMS

from kw_mm.analysis.startup import hardlink_imagenet, measure_startup, write_probe_config
from kw_mm.datasets import ImageLoadError
from kw_mm.runner.data_check import NAMING_LOADER, name_bad_images

from tests.helpers.tool_runs import DEMO_CLS, ROOT, check, free_port, run, tiny_cls

LARGE = 20000


@pytest.mark.slow
def test_no_per_file_work_before_the_first_iteration(tmp_path):
    data = tiny_cls(tmp_path)
    large_root = str(tmp_path / 'large')
    assert hardlink_imagenet(data['data_root'], large_root, LARGE, 40) == dict(train=LARGE,
                                                                               val=40)
    assert sum(len(files) for _, _, files in os.walk(osp.join(large_root, 'train'))) == LARGE
    record_file = str(tmp_path / 'probe.json')
    probe = write_probe_config(data['cfg'], large_root, record_file, str(tmp_path / 'probe.py'))
    record = measure_startup(ROOT, probe, record_file, str(tmp_path / 'work'),
                             count_under=large_root, timeout=600)
    assert record['train_samples'] == LARGE
    # The first batch (2 images) and the two annotation files; a scan would open 20,040 files.
    assert record['opens'] <= record['batch_size'] + 4, record
    assert record['listings'] == 0, record


def test_pipelines_load_with_the_naming_transform():
    from mmengine.config import Config
    cfg = Config.fromfile(DEMO_CLS)
    assert name_bad_images(cfg, ['train_dataloader', 'val_dataloader']) == 2
    assert cfg.train_dataloader.dataset.pipeline[0]['type'] == NAMING_LOADER
    assert cfg.test_dataloader.dataset.pipeline[0]['type'] == 'LoadImageFromFile'


def test_bad_image_is_named_with_its_index(tmp_path):
    from PIL import Image
    good, bad = tmp_path / 'good.png', tmp_path / 'bad.png'
    Image.new('RGB', (4, 4)).save(good)
    bad.write_bytes(b'')
    load = TRANSFORMS.build(dict(type=NAMING_LOADER))
    assert load(dict(img_path=str(good), sample_idx=3))['img'].shape == (4, 4, 3)
    with pytest.raises(ImageLoadError) as err:
        load(dict(img_path=str(bad), sample_idx=7))
    assert str(err.value).startswith(f'cannot read image {bad} (dataset index 7): ')
    assert 'tools/misc/verify_dataset.py' in str(err.value)
    skip = TRANSFORMS.build(dict(type=NAMING_LOADER, ignore_empty=True))
    assert skip(dict(img_path=str(bad), sample_idx=7)) is None


@pytest.mark.slow
def test_training_names_a_corrupt_image_when_it_meets_it(tmp_path):
    data = tiny_cls(tmp_path)
    bad = osp.join(data['data_root'], 'train', 'square', 'square_0002.png')
    open(bad, 'wb').close()  # a zero-byte PNG: index 6 (circle 0-3, square 0-3)
    proc = run([sys.executable, 'tools/train.py', data['cfg'], '--work-dir',
                str(tmp_path / 'work')])
    assert proc.returncode != 0
    assert f'ImageLoadError: cannot read image {bad} (dataset index 6)' in proc.stderr, \
        proc.stderr[-3000:]


@pytest.mark.slow
def test_verify_dataset_finds_every_bad_image_in_two_processes(tmp_path):
    data = tiny_cls(tmp_path)
    bad = [osp.join(data['data_root'], 'train', 'square', 'square_0001.png'),
           osp.join(data['data_root'], 'val', 'circle', 'circle_0004.png')]
    truncated = osp.join(data['data_root'], 'val', 'square', 'square_0000.png')
    originals = {}
    for path in bad + [truncated]:
        with open(path, 'rb') as f:
            originals[path] = f.read()
    for path in bad:
        open(path, 'wb').close()
    content = originals[truncated]
    with open(truncated, 'wb') as f:
        f.write(content[:len(content) // 2])  # the header intact, the pixels cut
    proc = run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
                '--master_port', str(free_port()), 'tools/misc/verify_dataset.py',
                data['cfg'], '--launcher', 'pytorch'])
    assert proc.returncode != 0
    assert 'checking the 8 images of train_dataloader, 4 in this process of 2' in proc.stdout
    lines = [line for line in proc.stderr.splitlines() if 'cannot be read' in line]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert f'train_dataloader: 1 of 8 images cannot be read: {bad[0]} (0 bytes)' in lines[0]
    # one process: the header-only scan misses the truncated file, the decoding one finds it
    one = run([sys.executable, 'tools/misc/verify_dataset.py', data['cfg'], '--split', 'val',
               '--header-only'])
    assert f'val_dataloader: 1 of 12 images cannot be read: {bad[1]} (0 bytes)' in one.stderr
    full = run([sys.executable, 'tools/misc/verify_dataset.py', data['cfg'], '--split', 'val'])
    assert 'val_dataloader: 2 of 12 images cannot be read' in full.stderr
    assert f'{truncated} (' in full.stderr
    for path, content in originals.items():
        with open(path, 'wb') as f:
            f.write(content)
    good = check(run([sys.executable, 'tools/misc/verify_dataset.py', data['cfg']]))
    assert 'all 20 images of train_dataloader, val_dataloader can be read' in good.stdout
