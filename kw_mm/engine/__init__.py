from .checkpoint_schedule import (follow_checkpoint_schedule,  # noqa: F401
                                  pretrained_checkpoint_temperature, stored_config)
from .hooks import *  # noqa: F401,F403
from .optim_wrappers import *  # noqa: F401,F403
from .schedule_check import check_temperature_schedule  # noqa: F401
