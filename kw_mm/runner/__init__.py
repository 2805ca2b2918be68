"""What the command-line tools do around an mmengine Runner: argument parsing, launching,
checkpoint temperature, metric summaries. Used by ``tools/``; nothing below imports it."""
