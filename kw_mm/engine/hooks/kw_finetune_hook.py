# PLACEHOLDER: being written
KWFinetuneHook = None
