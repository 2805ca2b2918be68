"""Running the tools as a user does (subprocesses from the repo root), for the tool tests."""
import os
import os.path as osp
import socket
import subprocess
import sys

from tests.helpers import REPO_ROOT as ROOT


def free_port() -> int:
    """A free TCP port for torchrun's rendezvous."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run(cmd, timeout: int = 900, **env) -> subprocess.CompletedProcess:
    """Run ``cmd`` from the repo root with this interpreter and one thread per process."""
    full_env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1', **env)
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def check(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Fail with the end of the output when the command failed."""
    assert proc.returncode == 0, f'exit {proc.returncode}\n{proc.stdout[-3000:]}\n' \
                                 f'{proc.stderr[-5000:]}'
    return proc
