"""kw_mm: KernelWarehouse (ICML 2024) dynamic convolution for mmpretrain and mmdet."""
from ._warnings import quiet_toolbox_warnings

quiet_toolbox_warnings()

from .cnn import get_temperature, set_temperature  # noqa: E402 (after the warning filters)
from .version import __version__

__all__ = ['__version__', 'get_temperature', 'set_temperature']


def _register_all() -> None:
    # Importing the toolbox-facing packages registers their modules in the kw_mm scope. They
    # need mmengine; the layers in kw_mm.cnn do not.
    from . import datasets, engine, models  # noqa: F401
    # torch >= 2.6 loads with weights_only=True; let the Runner resume its own checkpoints
    # (their metadata types only, see kw_mm.utils.checkpoint) in any script importing kw_mm.
    from .utils.checkpoint import allow_mmengine_checkpoints
    allow_mmengine_checkpoints()
    # mmpretrain's get_model / list_models / inferencers find kw_mm's pretraining configs.
    from .apis.model_names import register_with_mmpretrain
    register_with_mmpretrain()


try:
    _register_all()
except ModuleNotFoundError as err:  # pragma: no cover - layers-only use without the toolboxes
    if not (err.name or '').startswith('mm'):
        raise
