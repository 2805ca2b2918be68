"""Small deterministic data sets for the demos (``make demo``)."""
