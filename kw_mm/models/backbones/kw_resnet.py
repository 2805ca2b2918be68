# PLACEHOLDER: being written
KWResNet = None
