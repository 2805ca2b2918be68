# Sourced by the launchers: sets PY to the interpreter they run the tools with, $PYTHON if set,
# else python of an activated virtualenv, else the repo's .venv (made by make /
# tools/setup_env.sh) if it exists, else python.
VENV_PYTHON="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../.venv/bin/python"
if [[ -n "${PYTHON:-}" ]]; then
  PY="${PYTHON}"
elif [[ -z "${VIRTUAL_ENV:-}" && -x "${VENV_PYTHON}" ]]; then
  PY="${VENV_PYTHON}"
else
  PY=python
fi
