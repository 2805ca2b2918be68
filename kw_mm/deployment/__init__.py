"""Deployment of kw_mm models: ONNX export with a symbolic batch, checked with onnxruntime."""
from .onnx_export import (ExportError, ExportTarget, check_onnx, export_onnx, onnx_batch_dims,
                          relative_error)

__all__ = ['ExportError', 'ExportTarget', 'check_onnx', 'export_onnx', 'onnx_batch_dims',
           'relative_error']
