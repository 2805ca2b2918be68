# PLACEHOLDER: being written
KWLinearClsHead = None
