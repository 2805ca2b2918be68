# PLACEHOLDER: being written
KWConvNeXt = None
