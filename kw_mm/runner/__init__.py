"""What the command-line tools do around an mmengine Runner: argument parsing, launching and
closing (``launch``), checks before anything runs (``config_checks``: overrides and hook
arguments; ``work_dir``: existing checkpoints; ``data_check``: unreadable images), the console
output (``output``) and metric summaries (``summary``). Used by ``tools/``; nothing below
imports it."""
