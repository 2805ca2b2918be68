"""The ``kw_mm`` registry scope.

Child registries of mmengine's root registries with ``locations``, so that a config of any
OpenMMLab toolbox can say ``type='kw_mm.KWResNet'`` (or ``'kw_mm.KWTemperatureHook'``,
``'kw_mm.CPUAmpOptimWrapper'``): mmengine
imports ``kw_mm.registry`` for the ``kw_mm.`` prefix and then the modules listed here.
"""
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='kw_mm', locations=['kw_mm.models'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='kw_mm', locations=['kw_mm.engine'])
OPTIM_WRAPPERS = Registry('optim_wrapper', parent=MMENGINE_OPTIM_WRAPPERS, scope='kw_mm',
                          locations=['kw_mm.engine'])
TRANSFORMS = Registry('transform', parent=MMENGINE_TRANSFORMS, scope='kw_mm',
                      locations=['kw_mm.datasets'])

__all__ = ['MODELS', 'HOOKS', 'OPTIM_WRAPPERS', 'TRANSFORMS']
