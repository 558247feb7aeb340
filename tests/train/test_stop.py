"""Stop requests: signals set a flag for the loop, handlers are the session's only, and a
second Ctrl-C leaves at once."""

import os
import signal
import subprocess
import sys

from helpers import PYTHONPATH, ROOT

from effnetlite.train import stop


def test_a_signal_requests_a_stop_and_the_handlers_are_restored_after():
  before = {signum: signal.getsignal(signum) for signum in stop.SIGNALS}
  with stop.StopRequests() as requests:
    assert not requests.reached(1)
    os.kill(os.getpid(), signal.SIGUSR1)  # handled before the next bytecode
    assert requests.reached(2)
    stopped = requests.stopped(2)
    assert (stopped.signal_name, stopped.step, stopped.exit_code) == ("SIGUSR1", 2, 138)
  assert {signum: signal.getsignal(signum) for signum in stop.SIGNALS} == before


def test_ctrl_c_requests_a_stop_and_a_second_one_exits_at_once():
  code = """
import os, signal, time
from effnetlite.train import stop
with stop.StopRequests() as requests:
  os.kill(os.getpid(), signal.SIGINT)
  print("first:", requests.stopped(1).exit_code, requests.stopped(1).signal_name, flush=True)
  os.kill(os.getpid(), signal.SIGINT)
  time.sleep(5)
  print("not reached", flush=True)
"""
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=PYTHONPATH), timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  assert result.stdout == "first: 130 Ctrl-C\n"
  assert result.returncode == 130
  assert result.stderr.strip() == ("error: second Ctrl-C: exiting at once (the last saved "
                                   "checkpoint stays)")
