# PLACEHOLDER: being written
KWTemperatureHook = None
