"""Checks of a config and its ``--cfg-options`` before anything runs.

mmengine accepts any override: ``optim_wraper.optimizer.lr=0.1`` (a misspelt top-level key)
adds a new, unused entry and the run trains with the old learning rate; a misspelt argument of
a hook (``default_hooks.checkpoint.intervall=1``) is accepted by the hook's ``**kwargs`` and
only fails when the first checkpoint is saved, after a whole epoch. Both are refused here with
the close matches.
"""
import difflib
import inspect
from typing import Any, Callable, Dict, Iterable, Iterator, Mapping, Optional, Tuple

#: Hooks whose ``**kwargs`` are passed on to another callable, and the arguments the hook
#: already passes to it explicitly (so they cannot come through ``**kwargs``).
KWARGS_TARGETS: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    'CheckpointHook': ('save_checkpoint', (
        'out_dir', 'filename', 'file_client_args', 'save_optimizer', 'save_param_scheduler',
        'meta', 'by_epoch', 'backend_args')),
}


#: Keys of a component config that the registry consumes, not the component.
BUILD_KEYS = ('type', 'priority', '_scope_')


def _close(word: str, options: Iterable[str]) -> str:
    matches = difflib.get_close_matches(word, [str(o) for o in options], n=3, cutoff=0.6)
    return f' (did you mean {" or ".join(matches)}?)' if matches else ''


def check_cfg_options(cfg: Mapping, options: Optional[Mapping[str, Any]]) -> None:
    """Raise a ValueError if an override's parent does not exist in ``cfg``.

    ``a.b.c=v`` needs ``a`` and ``a.b`` in the config (a new last key is allowed: it may be an
    optional argument); numeric parts index lists (``custom_hooks.0.anneal_epochs``).

    Args:
        cfg (Mapping): The config before the overrides are merged.
        options (Mapping, optional): ``--cfg-options`` as parsed by mmengine's DictAction.
    """
    root = cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg  # mmengine's Config: a dict
    for key in options or {}:
        parts = key.split('.')
        node: Any = root
        for depth, part in enumerate(parts[:-1]):
            where = '.'.join(parts[:depth + 1])
            if isinstance(node, (list, tuple)):
                if not (part.isdigit() and int(part) < len(node)):
                    parent = '.'.join(parts[:depth]) or 'the config'
                    raise ValueError(f'--cfg-options {key}: {parent} is a list of {len(node)} '
                                     f'entries; {part!r} is not an index of it')
                node = node[int(part)]
            elif isinstance(node, Mapping) and part in node:
                node = node[part]
            else:
                parent = '.'.join(parts[:depth]) or 'the config'
                known = list(node.keys()) if isinstance(node, Mapping) else []
                raise ValueError(f'--cfg-options {key}: {parent} has no {part!r}, so {where} '
                                 f'does not exist{_close(part, known)}')


def _hook_cfgs(cfg: Mapping) -> Iterator[Tuple[str, Mapping]]:
    """``(where, hook config)`` of every default and custom hook of ``cfg``."""
    for name, hook in (cfg.get('default_hooks') or {}).items():
        if isinstance(hook, Mapping):
            yield f'default_hooks.{name}', hook
    for idx, hook in enumerate(cfg.get('custom_hooks') or []):
        if isinstance(hook, Mapping):
            yield f'custom_hooks.{idx}', hook


def _accepted(cls: type, runner_cls: type) -> Optional[set]:
    """Argument names ``cls`` accepts, or None if it takes any (``**kwargs`` passed on to
    something we cannot see)."""
    params = inspect.signature(cls.__init__).parameters
    names = {n for n, p in params.items() if n != 'self' and p.kind not in (
        inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)}
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return names
    target = KWARGS_TARGETS.get(cls.__name__)
    if target is None:
        return None
    method, passed = target
    target_fn: Callable = getattr(runner_cls, method)
    target_params = inspect.signature(target_fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in target_params.values()):
        return None
    return names | (set(target_params) - set(passed) - {'self'})


def check_hook_args(cfg: Mapping, scope: str) -> None:
    """Raise a ValueError naming every hook argument of ``cfg`` that its hook does not take.

    Args:
        cfg (Mapping): The merged config.
        scope (str): The registry scope of the config (``'mmpretrain'`` or ``'mmdet'``).
    """
    from mmengine.registry import HOOKS
    from mmengine.runner import Runner
    with HOOKS.switch_scope_and_registry(scope) as registry:
        for where, hook in _hook_cfgs(cfg):
            kind = hook.get('type')
            cls = registry.get(kind) if isinstance(kind, str) else kind
            if not inspect.isclass(cls):
                continue  # unknown types are reported by the registry when the Runner is built
            accepted = _accepted(cls, Runner)
            if accepted is None:
                continue
            for arg in hook:
                if arg not in accepted and arg not in BUILD_KEYS:
                    raise ValueError(f'{where}.{arg}: {cls.__name__} has no argument {arg!r}'
                                     f'{_close(arg, sorted(accepted))}')
