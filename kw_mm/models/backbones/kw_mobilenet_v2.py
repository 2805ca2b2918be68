# PLACEHOLDER: being written
KWMobileNetV2 = None
