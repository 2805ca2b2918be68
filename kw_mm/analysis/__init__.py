"""Measuring models: parameter/FLOP counts, the model-zoo table, the speed benchmark and the
attention maps. Built on :mod:`kw_mm.cnn` and :mod:`kw_mm.models`; used by ``tools/analysis``."""
