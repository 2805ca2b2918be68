"""``--show-dir`` of ``tools/test.py``: the toolbox's visualization hook draws every test image.

mmpretrain's ``VisualizationHook`` (``enable``, ``out_dir``, ``interval``) and mmdet's
``DetVisualizationHook`` (``draw``, ``test_out_dir``, which it joins to
``work_dir/timestamp`` unless it is absolute) take different switches; both get an absolute
directory, so the pictures land where the user asked.
"""
import os.path as osp
from typing import Any


def enable_show_dir(cfg: Any, show_dir: str) -> str:
    """Make the test run draw its predictions on every image into ``show_dir``.

    Args:
        cfg (Config): An mmpretrain or mmdet config (``default_scope``).
        show_dir (str): Directory of the pictures.

    Returns:
        str: The absolute directory the pictures go to.
    """
    hook = (cfg.get('default_hooks') or {}).get('visualization')
    if hook is None:
        raise ValueError(f'{cfg.filename}: --show-dir needs the toolbox\'s visualization hook in '
                         'default_hooks.visualization, which this config does not have')
    out_dir = osp.abspath(show_dir)
    if cfg.get('default_scope') == 'mmdet':
        hook.update(draw=True, test_out_dir=out_dir)
    else:
        hook.update(enable=True, out_dir=out_dir, interval=1)
    return out_dir
