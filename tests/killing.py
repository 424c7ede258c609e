"""Run a Python snippet in a child process, to the end or until SIGKILL at a chosen moment."""

import os
import random
import signal
import subprocess
import sys
import time

# A child that runs library code directly has no top floor to read the environment for it: importing flows/ makes
# it take this session's ORTHO_* settings (conftest.py: ORTHO_FSYNC=0) as `ortho` would.
CHILD_PREAMBLE = "import flows  # noqa: F401\n"


def run_or_kill(script: str, args: list[str], kill_when=None, jitter_s: float = 0.02) -> bool:
    """Run `script` with `args`. Without `kill_when`, wait and require exit 0. Otherwise SIGKILL the
    child once kill_when() is true (plus a random few ms). Returns whether the child had finished."""
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen([sys.executable, "-c", CHILD_PREAMBLE + script, *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if kill_when is None:
        assert proc.wait(timeout=300) == 0
        return True
    while proc.poll() is None and not kill_when():
        time.sleep(0.002)
    time.sleep(random.uniform(0, jitter_s))
    finished = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return finished
