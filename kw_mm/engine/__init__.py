from .hooks import *  # noqa: F401,F403
from .schedule_check import check_temperature_schedule  # noqa: F401
