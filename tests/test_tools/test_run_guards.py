"""What tools/train.py and tools/test.py refuse or correct before anything runs: typos in the
overrides and in hook arguments, an anneal longer than the run, lost checkpoints, an empty
resume, and a temperature schedule other than the checkpoint's own; unreadable images
(tests/test_tools/test_data_startup.py has the loader's and the scan's messages)."""
import os
import os.path as osp
import sys

import pytest
from mmengine.config import Config
from mmengine.fileio import load

from kw_mm.runner.config_checks import check_cfg_options, check_hook_args
from kw_mm.runner.data_check import check_images
from kw_mm.runner.launch import add_dump_results, register_toolbox
from kw_mm.runner.work_dir import check_work_dir

from tests.helpers.tool_runs import (DEMO_CLS, check, evaluate_top1, free_port, predictions,
                                     printed_top1, run, tiny_cls)


@pytest.fixture(scope='module')
def unfinished(tiny):
    """The tiny config trained with T = 4 epochs in its 2 epochs (allowed on purpose): the run
    ends at t = 1 - 8 / 16 = 0.5."""
    work_dir = tiny['tmp'] / 'unfinished'
    proc = run([sys.executable, 'tools/train.py', tiny['cfg'], '--work-dir', str(work_dir),
                '--allow-unfinished-anneal', '--cfg-options', 'custom_hooks.0.anneal_epochs=4'])
    return dict(proc=proc, work_dir=work_dir)


def train(tiny, work_dir, *extra):
    return run([sys.executable, 'tools/train.py', tiny['cfg'], '--work-dir', str(work_dir),
                *extra])


def refused(proc, *phrases):
    """The command failed before training, with one error line holding every phrase."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    for phrase in phrases:
        assert phrase in last, (phrase, proc.stderr[-3000:])
    assert 'Epoch(train)' not in proc.stdout + proc.stderr
    return last


# ---------------------------------------------------------------------- finding 1: temperature
@pytest.mark.slow
def test_checkpoint_temperature_comes_from_its_own_run(tiny, unfinished):
    check(unfinished['proc'])
    ckpt = str(unfinished['work_dir'] / 'epoch_2.pth')
    # The command-line config anneals over T = 1 epoch (t = 0 at epoch 2); the run that saved
    # the checkpoint annealed over 4 and stopped at t = 0.5.
    dumped = tiny['tmp'] / 'test_unfinished.pkl'
    proc = check(run([sys.executable, 'tools/test.py', tiny['cfg'], ckpt, '--work-dir',
                      str(tiny['tmp'] / 'test_unfinished'), '--out', str(dumped)]))
    assert (f'{ckpt} was trained with KWTemperatureHook(anneal_epochs=4, '
            'allow_unfinished_anneal=True) (t = 0.5 at its last iteration), the config says '
            "KWTemperatureHook(anneal_epochs=1): using the checkpoint's") in proc.stdout
    assert 'KWTemperatureHook: evaluating at t = 0.5 ' in proc.stdout + proc.stderr
    assert printed_top1(proc.stdout) == pytest.approx(
        evaluate_top1(tiny['cfg'], ckpt, 0.5), abs=0.005)
    # The predictions themselves are those of t = 0.5 and not of the config's t = 0 (on this
    # tiny set both temperatures can give the same top-1, so the scores decide).
    scores = {row['img_path']: row['pred_score'] for row in load(str(dumped))}
    assert len(scores) == 12
    for t, same in ((0.5, True), (0.0, False)):
        expected = {path: logits.softmax(0)
                    for path, logits, _ in predictions(tiny['cfg'], ckpt, t)}
        gap = max(float((scores[p] - expected[p]).abs().max()) for p in expected)
        assert (gap < 1e-5) is same, (t, gap)

    # the attention-map tool reads the same schedule
    proc = check(run([sys.executable, 'tools/analysis/vis_attention.py', tiny['cfg'], ckpt,
                      '--out', str(tiny['tmp'] / 'attention'), '--max-images', '2']))
    assert "using the checkpoint's" in proc.stdout and 'temperature t = 0.5\n' in proc.stdout


@pytest.mark.slow
def test_fine_tuning_names_a_checkpoint_saved_mid_anneal(tiny, unfinished):
    check(unfinished['proc'])
    ckpt = str(unfinished['work_dir'] / 'epoch_2.pth')
    config = tiny['tmp'] / 'finetune.py'
    config.write_text(f"_base_ = {tiny['cfg']!r}\nload_from = {ckpt!r}\n"
                      "custom_hooks = [dict(type='kw_mm.KWFinetuneHook')]\n"
                      "train_cfg = dict(max_epochs=1, val_interval=1)\n")
    proc = check(run([sys.executable, 'tools/train.py', str(config), '--work-dir',
                      str(tiny['tmp'] / 'finetune')]))
    assert (f'{ckpt} was saved at t = 0.5, before the anneal of its own run ended (its stored '
            'config); this run uses t = 0 (fine-tuning)') in proc.stdout


def test_out_option_adds_dump_results():
    cfg = Config.fromfile(DEMO_CLS)
    add_dump_results(cfg, 'preds.pkl')
    assert cfg.test_evaluator[-1] == dict(type='DumpResults', out_file_path='preds.pkl')
    assert cfg.test_evaluator[0]['type'] == 'Accuracy'  # the config's evaluator stays first
    with pytest.raises(ValueError, match=r"^--out must be a .pkl or .pickle file, got "
                                         r"'preds.json'$"):
        add_dump_results(cfg, 'preds.json')


# ---------------------------------------------------------------------- finding 2: anneal
@pytest.mark.slow
def test_anneal_longer_than_the_run_is_refused(tiny, unfinished):
    work_dir = tiny['tmp'] / 'too_long'
    last = refused(train(tiny, work_dir, '--cfg-options', 'custom_hooks.0.anneal_epochs=10'),
                   'over 10 epochs but the run has max_epochs=2: it would end at t = 0.8',
                   '--allow-unfinished-anneal')
    assert last.startswith('ValueError: ')
    assert not osp.exists(work_dir)
    check(unfinished['proc'])  # the same with --allow-unfinished-anneal trains
    assert 'it would end at t = 0.5' in unfinished['proc'].stdout + unfinished['proc'].stderr


# ---------------------------------------------------------------------- finding 3: overrides
def test_cfg_options_need_an_existing_parent():
    cfg = Config.fromfile(DEMO_CLS)
    with pytest.raises(ValueError, match=r"^--cfg-options optim_wraper.optimizer.lr: the config "
                                         r"has no 'optim_wraper', so optim_wraper does not exist "
                                         r"\(did you mean optim_wrapper\?\)$"):
        check_cfg_options(cfg, {'optim_wraper.optimizer.lr': 0.1})
    with pytest.raises(ValueError, match=r"default_hooks has no 'chekpoint'.*did you mean "
                                         r"checkpoint\?"):
        check_cfg_options(cfg, {'default_hooks.chekpoint.interval': 1})
    with pytest.raises(ValueError, match=r"custom_hooks is a list of 1 entries; '3' is not an "
                                         r"index of it"):
        check_cfg_options(cfg, {'custom_hooks.3.anneal_epochs': 1})
    # existing parents, new leaves and top-level variables are accepted
    check_cfg_options(cfg, {'optim_wrapper.optimizer.lr': 0.1, 'custom_hooks.0.anneal_epochs': 1,
                            'train_cfg.val_begin': 2, 'data_root': '/x', 'seed_note': 1,
                            'model.backbone.drop_path_rate': 0.1})


def test_hook_arguments_are_checked_at_build_time():
    cfg = Config.fromfile(DEMO_CLS)
    scope = register_toolbox(cfg)
    check_hook_args(cfg, scope)  # the config as it is
    cfg.merge_from_dict({'default_hooks.checkpoint.intervall': 1})
    with pytest.raises(ValueError, match=r"^default_hooks.checkpoint.intervall: CheckpointHook "
                                         r"has no argument 'intervall' \(did you mean "
                                         r"interval\?\)$"):
        check_hook_args(cfg, scope)
    cfg = Config.fromfile(DEMO_CLS)
    cfg.merge_from_dict({'custom_hooks.0.aneal_epochs': 1})
    with pytest.raises(ValueError, match=r"custom_hooks.0.aneal_epochs: KWTemperatureHook has no "
                                         r"argument 'aneal_epochs' \(did you mean anneal_epochs"):
        check_hook_args(cfg, scope)


def test_every_shipped_config_passes_the_hook_check():
    """No false alarm: the hooks of every config in configs/ take all their arguments."""
    import glob
    configs = sorted(glob.glob(osp.join(osp.dirname(DEMO_CLS), '..', '*.py')) +
                     glob.glob(osp.join(osp.dirname(DEMO_CLS), '*.py')))
    assert len(configs) > 20
    for path in configs:
        cfg = Config.fromfile(path)
        check_hook_args(cfg, register_toolbox(cfg))


@pytest.mark.slow
def test_override_typos_stop_the_tools_before_anything_runs(tiny):
    work_dir = tiny['tmp'] / 'typo'
    refused(train(tiny, work_dir, '--cfg-options', 'optim_wraper.optimizer.lr=0.1'),
            "the config has no 'optim_wraper'", 'did you mean optim_wrapper?')
    refused(train(tiny, work_dir, '--cfg-options', 'default_hooks.checkpoint.intervall=1'),
            "CheckpointHook has no argument 'intervall' (did you mean interval?)")
    assert not osp.exists(work_dir)


# ---------------------------------------------------------------------- finding 4: work dirs
def test_work_dir_rules(tmp_path):
    empty, used = tmp_path / 'empty', tmp_path / 'used'
    used.mkdir()
    (used / 'epoch_1.pth').write_bytes(b'x')
    (used / 'last_checkpoint').write_text(str(used / 'epoch_1.pth'))
    assert check_work_dir(str(empty), None, False, False) is None
    with pytest.raises(FileExistsError, match=r'holds checkpoints \(epoch_1.pth, '
                                              r'last_checkpoint\); continue that run with '
                                              r'--resume, or .* --overwrite'):
        check_work_dir(str(used), None, False, False)
    assert check_work_dir(str(used), None, True, False) is None
    assert check_work_dir(str(used), 'auto', False, False) is None
    with pytest.raises(FileNotFoundError, match=r'nothing to resume in .*empty \(no checkpoint\)'
                                                r'.* --allow-fresh'):
        check_work_dir(str(empty), 'auto', False, False)
    assert 'starting from scratch' in check_work_dir(str(empty), 'auto', False, True)
    # a checkpoint given by path is checked by its loader, not here
    assert check_work_dir(str(empty), str(used / 'epoch_1.pth'), False, False) is None


@pytest.mark.slow
def test_checkpoints_are_not_overwritten_and_empty_resume_stops(tiny, unfinished):
    check(unfinished['proc'])
    work_dir = unfinished['work_dir']
    before = {name: os.stat(work_dir / name).st_mtime_ns for name in os.listdir(work_dir)
              if name.endswith('.pth') or name == 'last_checkpoint'}
    assert 'epoch_2.pth' in before
    refused(train(tiny, work_dir), f'work dir {work_dir} already holds checkpoints '
            '(epoch_1.pth, epoch_2.pth, last_checkpoint)', '--resume', '--overwrite')
    assert {name: os.stat(work_dir / name).st_mtime_ns for name in before} == before

    empty = tiny['tmp'] / 'nothing_here'
    refused(train(tiny, empty, '--resume'), f'--resume: nothing to resume in {empty} '
            '(no checkpoint)', '--allow-fresh')
    assert not osp.exists(empty / 'last_checkpoint')


# ---------------------------------------------------------------------- finding 5: bad images
def test_image_check_names_bad_files(tmp_path):
    from PIL import Image
    good, empty, text = tmp_path / 'good.png', tmp_path / 'empty.png', tmp_path / 'text.png'
    Image.new('RGB', (4, 4)).save(good)
    empty.write_bytes(b'')
    text.write_text('not an image')
    problems = check_images([str(good), str(empty), str(text), str(tmp_path / 'gone.png')],
                            progress=False)
    assert [(osp.basename(p), why.split(',')[0]) for p, why in problems] == [
        ('empty.png', '0 bytes'), ('text.png', '12 bytes'), ('gone.png', 'missing')]


@pytest.mark.slow
def test_a_failure_fails_the_two_process_launch(tmp_path):
    """The processes destroy their process group in a ``finally``: an error still ends the
    torchrun launch with a failure (and names its cause)."""
    data = tiny_cls(tmp_path)
    bad = osp.join(data['data_root'], 'val', 'circle', 'circle_0001.png')
    open(bad, 'wb').close()
    proc = run(['bash', 'tools/dist_train.sh', data['cfg'], '2', '--work-dir',
                str(tmp_path / 'work')], PORT=str(free_port()))
    assert proc.returncode != 0
    assert f'ImageLoadError: cannot read image {bad} (dataset index 1)' in proc.stderr
    assert 'Epoch(train) [2]' in proc.stdout + proc.stderr  # met at the validation
