"""Checkpoint converters: released checkpoints of other code bases -> kw_mm / mmpretrain keys.

:mod:`.kw_release` converts the reference KernelWarehouse release (OSVAI/KernelWarehouse).
"""
