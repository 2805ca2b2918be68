"""ONNX export of kw_mm models with a symbolic batch size, checked with onnxruntime.

The graph is traced through ``torch.export`` (a symbolic batch dimension, or a static batch
size) and ``torch.onnx`` with the KW layers in their export formulation
(:func:`~kw_mm.cnn.export.kw_conv_export`): the per-sample kernels are assembled by one MatMul
and applied by ONNX Runtime's own ``Conv`` (a ``Scan`` over the samples at a symbolic batch, one
grouped ``Conv`` at a static batch) or, for point-wise layers, by one batched MatMul. What is
exported:

* a classifier (mmpretrain ``ImageClassifier``): the class scores before softmax;
* its backbone only (``part='backbone'``): the tuple of the selected stage outputs;
* a detector (mmdet, e.g. Mask R-CNN): the backbone and neck (``extract_feat``, the FPN
  levels). The heads (proposals, NMS, RoIAlign) are not exported: their output sizes depend on
  the data and they use mmcv's own operators.

The graph takes the normalized image batch ``[B, 3, H, W]`` (the config's data preprocessor,
mean and std, stays outside; they are written to the ONNX metadata) at the spatial size it was
exported with.
"""
import math
import os
import re
from contextlib import ExitStack
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from kw_mm.cnn import KWConvNd, use_kw_impl
from .export_fold import folded_norms

#: What can be exported from a model of each toolbox; the first is the default.
PARTS = {'mmpretrain': ('classifier', 'backbone'), 'mmdet': ('backbone+neck', 'backbone')}
INSTALL_HINT = 'pip install onnx onnxscript onnxruntime (or pip install -r requirements/tests.txt)'


class ExportError(RuntimeError):
    """A model cannot be exported; the message names the layer and the reason."""


def require(module_name: str, what: str):
    """Import ``module_name`` or raise a ModuleNotFoundError saying how to install it."""
    try:
        return __import__(module_name)
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(f'{what} needs the package {module_name!r}, which is not '
                                  f'installed: {INSTALL_HINT}', name=module_name) from err


class ExportTarget(nn.Module):
    """The part of a kw_mm model that is exported, as a module taking the image batch.

    Args:
        model (nn.Module): An mmpretrain classifier or an mmdet detector.
        scope (str): ``'mmpretrain'`` or ``'mmdet'``.
        part (str, optional): One of :data:`PARTS` for the scope. Defaults to the first.
    """

    def __init__(self, model: nn.Module, scope: str, part: Optional[str] = None) -> None:
        super().__init__()
        if scope not in PARTS:
            raise ValueError(f'export supports models of {sorted(PARTS)}, got scope {scope!r}')
        part = part or PARTS[scope][0]
        if part not in PARTS[scope]:
            raise ValueError(f'a {scope} model exports one of {list(PARTS[scope])}, '
                             f'got part={part!r}')
        self.model = model
        self.part = part

    def forward(self, inputs: torch.Tensor):
        if self.part == 'classifier':
            return self.model(inputs, mode='tensor')
        if self.part == 'backbone':
            return self.model.backbone(inputs)
        return self.model.extract_feat(inputs)


def flatten_outputs(outputs) -> List[torch.Tensor]:
    """The tensors of a (nested) tuple/list output, in order."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    return [t for item in outputs for t in flatten_outputs(item)]


# ------------------------------------------------------------------ which layer failed
class ModuleTrail:
    """Follows which module is running, to name the layer an exporter fails in.

    Forward pre-hooks push a module's name, forward hooks pop it; an exception leaves the stack
    as it was when it was raised, so its top is the innermost module that failed.
    """

    def __init__(self, model: nn.Module) -> None:
        self.stack: List[Tuple[str, nn.Module]] = []
        self._handles = []
        for name, module in model.named_modules():
            self._handles.append(module.register_forward_pre_hook(self._push(name)))
            self._handles.append(module.register_forward_hook(self._pop))

    def _push(self, name: str):
        def hook(module, args):
            self.stack.append((name, module))
        return hook

    def _pop(self, module, args, output):
        if self.stack and self.stack[-1][1] is module:
            self.stack.pop()

    def innermost(self) -> Optional[Tuple[str, nn.Module]]:
        return self.stack[-1] if self.stack else None

    def __enter__(self) -> 'ModuleTrail':
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()


def _layer_of_node(program, message: str) -> Optional[Tuple[str, str]]:
    """(module path, class) of the first graph node named in an exporter's ``message``."""
    for node in program.graph.nodes:
        if node.op != 'call_function' or not re.search(rf'\b{re.escape(node.name)}\b|'
                                                       rf'{re.escape(str(node.target))}',
                                                       message):
            continue
        stack = node.meta.get('nn_module_stack') or {}
        if stack:
            path, cls = list(stack.values())[-1]
            cls = cls if isinstance(cls, str) else getattr(cls, '__name__', str(cls))
            return path.replace('L__self__', '').lstrip('.') or '(top level)', cls
    return None


def _class_path(module: nn.Module) -> str:
    """``package.module.Class`` of a layer (where it comes from tells why it may not trace)."""
    cls = type(module)
    return f'{cls.__module__}.{cls.__qualname__}'


def _first_line(err: BaseException) -> str:
    """The first line of the innermost cause (the exporters wrap the reason in their own
    errors)."""
    while err.__cause__ is not None:
        err = err.__cause__
    text = str(err).strip().splitlines()
    return f'{type(err).__name__}: {text[0] if text else ""}'


def _strip_target_prefix(name: str) -> str:
    return name[len('model.'):] if name.startswith('model.') else name


def check_exportable(target: nn.Module) -> None:
    """Raise :class:`ExportError` for layers known not to export before tracing anything."""
    for name, module in target.named_modules():
        if isinstance(module, KWConvNd) and module.geometry is None:
            raise ExportError(f'layer {_strip_target_prefix(name)} ({type(module).__name__}) '
                              'cannot be exported: it is not allocated to a warehouse (call '
                              'WarehouseManager.store() and allocate(model))')


# ------------------------------------------------------------------ export and check
def image_shape(size: Sequence[int]) -> Tuple[int, int, int]:
    """``(3, H, W)`` from ``[H]`` (square) or ``[H, W]``."""
    if len(size) not in (1, 2) or min(size) < 1:
        raise ValueError(f'the input size is H or H W (positive), got {list(size)}')
    return 3, size[0], size[-1]


def example_input(batch: int, shape: Sequence[int], seed: int = 0) -> torch.Tensor:
    """A seeded normalized-image batch ``[batch, *shape]``."""
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed))


def _export_error(trail: 'ModuleTrail', err: BaseException) -> 'ExportError':
    """``err`` as an :class:`ExportError` naming the innermost layer ``trail`` saw running."""
    where = trail.innermost()
    layer = (f'layer {_strip_target_prefix(where[0]) or "(top level)"} '
             f'({_class_path(where[1])})' if where else 'the model')
    return ExportError(f'{layer} cannot be exported with torch.export: {_first_line(err)}')


def export_onnx(target: nn.Module, path: str, shape: Sequence[int] = (3, 224, 224),
                dynamic_batch: bool = True, metadata: Optional[Dict[str, str]] = None,
                batch: int = 1, optimize: bool = True, fold_norms: bool = True) -> str:
    """Export ``target`` (e.g. an :class:`ExportTarget`) to the ONNX file ``path``.

    Args:
        target (nn.Module): Takes ``[B, *shape]``; put in eval mode.
        path (str): The ``.onnx`` file (weights inside it).
        shape (Sequence[int]): ``(C, H, W)`` of one input.
        dynamic_batch (bool): A symbolic batch dimension; else the static ``batch``. Defaults
            to True.
        metadata (dict, optional): Written to the model's ``metadata_props``.
        batch (int): The batch size of a static-batch file (``dynamic_batch=False``); a KW
            layer's samples then run in one grouped ``Conv``. Defaults to 1.
        optimize (bool): Run the ONNX graph optimizer of ``torch.onnx`` (onnxscript's constant
            folding and rewrite rules) on the graph. It takes most of the export time of a deep
            network; without it the file computes the same, with more nodes (onnxruntime
            applies its own graph optimizations when it loads a file). Defaults to True.
        fold_norms (bool): Fold the evaluation BatchNorms (and activations) that follow KW
            layers into them (:func:`~kw_mm.deployment.export_fold.folded_norms`), so that
            ONNX Runtime runs them fused with the layers' ``Conv``. Defaults to True.

    Returns:
        str: ``path``.

    Raises:
        ExportError: A layer cannot be exported (named, with the exporter's reason).
        ModuleNotFoundError: onnx or onnxscript are missing (with how to install them).
    """
    if batch < 1 or (dynamic_batch and batch != 1):
        raise ValueError(f'batch is the size of a static-batch file (dynamic_batch=False), a '
                         f'positive int; got batch={batch} with dynamic_batch={dynamic_batch}')
    require('onnx', 'ONNX export')
    require('onnxscript', 'ONNX export (torch.onnx)')
    target.eval()
    check_exportable(target)
    # torch.export specializes sizes 0 and 1: trace a symbolic batch with two samples.
    example = example_input(2 if dynamic_batch else batch, shape)
    dynamic_shapes = ({0: torch.export.Dim('batch')}, ) if dynamic_batch else None
    with torch.no_grad(), use_kw_impl('export'), ExitStack() as stack:
        if fold_norms:
            # Its forward pass runs every layer: one that cannot run is named like one that
            # cannot be traced. (The trail's hooks must be gone before tracing: a moved
            # activation would carry them into the traced scan.)
            with ModuleTrail(target) as probe:
                try:
                    stack.enter_context(folded_norms(target, example))
                except Exception as err:  # noqa: BLE001 - re-raised naming the layer
                    raise _export_error(probe, err) from err
        trail = stack.enter_context(ModuleTrail(target))
        try:
            program = torch.export.export(target, (example, ), dynamic_shapes=dynamic_shapes,
                                          strict=False)
        except Exception as err:  # noqa: BLE001 - re-raised naming the layer
            raise _export_error(trail, err) from err
    try:
        onnx_program = torch.onnx.export(program, (example, ), input_names=['input'],
                                         dynamo=True, verbose=False, optimize=optimize)
    except Exception as err:  # noqa: BLE001 - re-raised naming the layer
        found = _layer_of_node(program, str(err))
        layer = (f'layer {_strip_target_prefix(found[0])} ({found[1]})' if found
                 else 'the model')
        raise ExportError(f'{layer} cannot be translated to ONNX: {_first_line(err)}') from err
    if metadata:
        for key, value in metadata.items():
            onnx_program.model.metadata_props[key] = str(value)
    onnx_program.save(path, external_data=False)
    return path


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``max |actual - expected| / max |expected|`` (0 when both are all zeros)."""
    scale = expected.abs().max().item()
    diff = (actual - expected).abs().max().item()
    return diff / scale if scale > 0 else diff


def check_onnx(path: str, target: nn.Module, shape: Sequence[int],
               batch_sizes: Sequence[int] = (1, 3), seed: int = 1) -> Dict[int, float]:
    """Run the ONNX file with onnxruntime and compare with ``target`` in PyTorch.

    ``target`` runs its usual implementation (the fast KW paths), so the check covers the
    export formulation and the ONNX translation together.

    Returns:
        dict: Batch size -> the largest :func:`relative_error` over the outputs.

    Raises:
        ModuleNotFoundError: onnxruntime is missing (with how to install it).
        ValueError: The file's outputs differ in number or shape from the model's.
    """
    ort = require('onnxruntime', 'Checking the exported model')
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    input_name = session.get_inputs()[0].name
    errors = {}
    target.eval()
    for batch in batch_sizes:
        x = example_input(batch, shape, seed + batch)
        with torch.no_grad():
            expected = flatten_outputs(target(x))
        actual = [torch.from_numpy(a) for a in session.run(None, {input_name: x.numpy()})]
        if [tuple(a.shape) for a in actual] != [tuple(e.shape) for e in expected]:
            raise ValueError(f'{path} at batch {batch}: onnxruntime gives shapes '
                             f'{[tuple(a.shape) for a in actual]}, PyTorch '
                             f'{[tuple(e.shape) for e in expected]}')
        errors[batch] = max(relative_error(a, e) for a, e in zip(actual, expected))
    return errors


def onnx_batch_dims(path: str) -> List[str]:
    """The batch dimension of every input and output of an ONNX file (a name if symbolic)."""
    onnx = require('onnx', 'Reading an ONNX file')
    graph = onnx.load(path, load_external_data=False).graph
    dims = []
    for value in list(graph.input) + list(graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dims.append(dim.dim_param or str(dim.dim_value))
    return dims


def describe_size(path: str) -> str:
    """The size of a file, in kB or MB."""
    size = os.path.getsize(path)
    return f'{size / 2**20:.1f} MB' if size >= 2**20 else f'{math.ceil(size / 1024)} kB'
