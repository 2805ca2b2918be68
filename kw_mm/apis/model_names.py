"""kw_mm's models by name: for kw_mm's own API and for mmpretrain's model hub.

Names are the config names of the model index (``kw1x-resnet18_8xb32_in1k``,
``mask-rcnn_kw-r50_1x_coco``). :func:`find_model` resolves one (an unknown name gets the close
matches). :func:`register_with_mmpretrain` makes mmpretrain's ``get_model``, ``list_models``,
``inference_model`` and ``ImageClassificationInferencer`` find every pretraining (classification)
config of the index; ``import kw_mm`` calls it. Detection configs are served by
:func:`kw_mm.apis.init_detector` (mmdet's ``DetInferencer`` looks names up in mmdet's own
metafiles only).
"""
import difflib
from typing import List, Optional

from .model_index import INDEX_FILE, ModelInfo, get_model_index

#: Tasks a model of the index serves.
TASKS = ('classification', 'detection')


def model_task(info: ModelInfo) -> str:
    """``'detection'`` for a detector (the index names its backbone's variant), else
    ``'classification'``."""
    return 'detection' if info.backbone_variant is not None else 'classification'


def model_names(task: Optional[str] = None) -> List[str]:
    """The names of the index's models, all or those of ``task``."""
    if task is not None and task not in TASKS:
        raise ValueError(f'task must be one of {list(TASKS)}, got {task!r}')
    return [name for name, info in get_model_index().models.items()
            if task is None or model_task(info) == task]


def find_model(name: str, task: Optional[str] = None) -> ModelInfo:
    """The model called ``name`` (a config name without ``.py``), of ``task`` if given.

    Raises:
        ValueError: An unknown name (the close matches are listed) or a model of another task.
    """
    index = get_model_index()
    info = index.models.get(name)
    if info is None:
        close = difflib.get_close_matches(name, model_names(task), n=5, cutoff=0.5)
        hint = (f'close matches: {", ".join(close)}' if close else
                'no close match')
        raise ValueError(f'unknown kw_mm model {name!r}; {hint} '
                         f'(kw_mm.apis.list_models() lists all {len(index.models)})')
    if task is not None and model_task(info) != task:
        raise ValueError(f'kw_mm model {name!r} is a {model_task(info)} model, not a {task} '
                         f'one; {task} models: {", ".join(model_names(task))}')
    return info


def _add_pretraining_models(hub) -> None:
    """Put the index's classification models into mmpretrain's ``ModelHub`` (once).

    mmpretrain's own names stay its own: a name both index have (``resnet18_8xb32_in1k``, the
    paper's Table 1 baseline, which mmpretrain ships with weights) is not replaced.
    """
    if getattr(hub, '_kw_mm_registered', False):
        return
    from modelindex.load_model_index import load
    from modelindex.models.Result import Result
    index = get_model_index()
    metafile_index = load(INDEX_FILE)
    metafile_index.build_models_with_collections()
    for metainfo in metafile_index.models:
        info = index.models.get(metainfo.name)
        key = metainfo.name.lower()
        if info is None or model_task(info) != 'classification' or key in hub._models_dict:
            continue
        metainfo.config = info.config_path
        if not metainfo.results:
            # mmpretrain's inference_model picks its inferencer by the results' task; the demo
            # models have no results (no paper numbers).
            metainfo.results = [Result(task='Image Classification',
                                       dataset=metainfo.metadata.training_data or 'unknown',
                                       metrics={})]
        hub._models_dict[key] = metainfo
    hub._kw_mm_registered = True


def register_with_mmpretrain() -> None:
    """Make mmpretrain's model hub find kw_mm's pretraining configs by name.

    mmpretrain reads its own index (about 550 models, seconds) the first time a name is looked
    up; kw_mm's models join right after it, so ``import kw_mm`` stays fast and neither index
    takes a name of the other (``ModelHub.register_model_index`` would refuse mmpretrain's own
    index later if kw_mm had taken one of its names first).
    """
    from mmpretrain.apis.model import ModelHub
    current = ModelHub.__dict__['_register_mmpretrain_models'].__func__
    if getattr(current, 'adds_kw_mm', False):
        return

    def register_mmpretrain_then_kw_mm(cls):
        current(cls)
        _add_pretraining_models(cls)

    register_mmpretrain_then_kw_mm.adds_kw_mm = True
    ModelHub._register_mmpretrain_models = classmethod(register_mmpretrain_then_kw_mm)
    if getattr(ModelHub, '_ModelHub__mmpretrain_registered', False):
        _add_pretraining_models(ModelHub)  # mmpretrain read its index before kw_mm was imported
