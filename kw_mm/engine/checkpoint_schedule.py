"""The temperature schedule of the run that saved a checkpoint (its ``meta['cfg']``).

A checkpoint's t is derived from its iteration and the schedule (see
:func:`~kw_mm.engine.hooks.kw_temperature_hook.checkpoint_temperature`). The schedule must be
the one of the run that produced the checkpoint: evaluated under another config's
``anneal_epochs`` the same weights run at another t (a model trained to t = 0.8 and evaluated
at t = 0 is at chance). mmengine's Runner stores its whole config in every checkpoint as
Python text (``meta['cfg']``); the functions here read the temperature hooks from it.

The stored text is never executed: only literal assignments (``name = dict(...)``, lists,
numbers, strings) are evaluated, so a checkpoint loaded with ``weights_only=True`` cannot run
code through its config either.
"""
import ast
import copy
from typing import Any, Dict, List, Mapping, Optional, Sequence

from kw_mm.registry import HOOKS
from .hooks.base import BaseTemperatureHook
from .hooks.kw_temperature_hook import checkpoint_temperature, temperature_hook_cfg_in

#: Top-level config entries read from a checkpoint's stored config.
SCHEDULE_KEYS = ('custom_hooks', 'train_cfg')


def _literal(node: ast.AST) -> Any:
    """The value of a literal expression, ``dict(...)`` calls included; else raise ValueError."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
            node.func.id == 'dict' and not node.args:
        return {kw.arg: _literal(kw.value) for kw in node.keywords if kw.arg is not None}
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, (ast.List, ast.Tuple)):
        values = [_literal(v) for v in node.elts]
        return values if isinstance(node, ast.List) else tuple(values)
    return ast.literal_eval(node)


def stored_config(checkpoint: Any, keys: Sequence[str] = SCHEDULE_KEYS) -> Optional[Dict]:
    """``{key: value}`` of the top-level ``keys`` in a Runner checkpoint's stored config.

    Returns:
        dict | None: None if ``checkpoint`` carries no config (a released or converted state
        dict). Keys whose value is not a literal are left out.
    """
    meta = checkpoint.get('meta') if isinstance(checkpoint, Mapping) else None
    text = meta.get('cfg') if isinstance(meta, Mapping) else None
    if not isinstance(text, str):
        return None
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return None
    values = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and \
                isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id in keys:
            try:
                values[stmt.targets[0].id] = _literal(stmt.value)
            except (ValueError, TypeError, SyntaxError):
                continue
    return values


def temperature_hooks(cfg: Mapping) -> List[Mapping]:
    """The entries of ``cfg['custom_hooks']`` that set the KW temperature, in order."""
    found = []
    for hook in cfg.get('custom_hooks') or []:
        kind = hook.get('type') if isinstance(hook, Mapping) else None
        hook_class = HOOKS.get(kind) if isinstance(kind, str) else kind
        if isinstance(hook_class, type) and issubclass(hook_class, BaseTemperatureHook):
            found.append(hook)
    return found


def describe_schedule(hooks: Sequence[Mapping]) -> str:
    """``'KWTemperatureHook(anneal_epochs=10)'``-style text of temperature hook entries."""
    if not hooks:
        return 'no temperature hook'
    parts = []
    for hook in hooks:
        names = sorted((k for k in hook if k not in ('type', 'priority')),
                       key=lambda k: (k != 'anneal_epochs', k))  # T first
        args = ', '.join(f'{k}={hook[k]!r}' for k in names)
        parts.append(f'{_name(hook)}({args})')
    return ', '.join(parts)


def _name(hook: Mapping) -> str:
    kind = hook['type']
    return kind.split('.')[-1] if isinstance(kind, str) else kind.__name__


def _schedule_key(hooks: Sequence[Mapping]) -> List[tuple]:
    return [(_name(h), float(h['anneal_epochs']) if 'anneal_epochs' in h else None)
            for h in hooks]


def follow_checkpoint_schedule(cfg: Any, checkpoint: Any, name: str) -> Optional[str]:
    """Give ``cfg`` the temperature hooks of the run that saved ``checkpoint``.

    The temperature hooks of ``cfg.custom_hooks`` are replaced (in place) by those of the
    checkpoint's stored config when the two differ in kind or ``anneal_epochs``.

    Args:
        cfg (Config): The command-line config (modified in place).
        checkpoint (Any): The loaded checkpoint.
        name (str): How to name the checkpoint in the message (its path).

    Returns:
        str | None: One line saying what differed and what is used, or None if nothing
        changed (same schedule, or a checkpoint without a stored config).
    """
    stored = stored_config(checkpoint)
    if stored is None or 'custom_hooks' not in stored:
        return None
    theirs, ours = temperature_hooks(stored), temperature_hooks(cfg)
    if _schedule_key(theirs) == _schedule_key(ours):
        return None
    kept = [h for h in cfg.get('custom_hooks') or [] if not any(h is o for o in ours)]
    cfg['custom_hooks'] = kept + [copy.deepcopy(dict(h)) for h in theirs]
    hook = temperature_hook_cfg_in(stored)
    t = checkpoint_temperature(checkpoint, float(hook['anneal_epochs'])) if hook else None
    at = f' (t = {t:g} at its last iteration)' if t is not None else ''
    return (f'{name} was trained with {describe_schedule(theirs)}{at}, the config says '
            f"{describe_schedule(ours)}: using the checkpoint's")


def pretrained_checkpoint_temperature(checkpoint: Any) -> Optional[float]:
    """The t at which ``checkpoint`` was saved under its own stored schedule, or None if it
    has no stored KWTemperatureHook (a state dict, a fine-tuning run: t = 0)."""
    stored = stored_config(checkpoint)
    hook = temperature_hook_cfg_in(stored) if stored else None
    if hook is None:
        return None
    return checkpoint_temperature(checkpoint, float(hook['anneal_epochs']))
