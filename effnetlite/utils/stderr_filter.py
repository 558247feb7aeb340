"""A filter on the process's stderr file descriptor that drops known lines, and only those.

Some native libraries print lines on every run that no setting of theirs turns off: C++
writing straight to file descriptor 2 (absl logging before `absl::InitializeLog()`,
`llvm::dbgs()`, `fprintf(stderr, ...)`), often while a shared library loads, so Python's
logging and the libraries' environment knobs never see them (`process.NATIVE_NOISE` lists
ours and why). The file descriptor is the one place left to stop them.

`install(patterns)` points fd 2 at a pipe read by a small separate process (this file, run
as a script) that copies everything to the real stderr except whole lines matching one of
`patterns`:
  - a separate process, not a thread: a C++ fatal error writes its message, then aborts
    the process; the pump outlives it, drains the pipe and shows the message;
  - Python's own stderr (`sys.stderr`: tracebacks, `error:`/`warning:` lines, progress bars)
    is rebound to the real stderr and bypasses the pump: it keeps its order with stdout and
    its terminal (a bar's width), and does not depend on the pump at all;
  - any other byte passes unchanged: a line as soon as its end arrives, an unfinished one
    (a prompt, a progress bar) after `HOLD_SECONDS` without more data;
  - it ends when the last writer of the pipe is gone: at the command's exit (which
    waits for it to write what it holds), or when the command is killed; a child process
    of the command that still writes to stderr keeps it until that child ends.
`install_on_import` starts the pump only when a package that prints such lines is first
imported, so a command that never loads one runs without it.
Where Python's stderr is not fd 2 (pytest's capture, a notebook), someone else owns the
stream and nothing is installed.
"""

from __future__ import annotations

import importlib.abc
import io
import os
import re
import select
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
  import subprocess

# How long an unfinished line waits for its end before it goes out as it is. Native writers
# send a line in one write or in a few pieces microseconds apart (fprintf on unbuffered stderr).
HOLD_SECONDS = 0.1
_MAX_HELD = 4096  # a "line" this long without an end is not one of ours: pass it on
_LINE_ENDS = re.compile(rb"(?<=[\r\n])")  # \r too: a progress bar's redraw ends its line
_WAIT_FOR_PUMP_SECONDS = 2.0


def _write_all(fd: int, data: bytes) -> None:
  view = memoryview(data)
  while view:
    view = view[os.write(fd, view):]


def filter_lines(source: int, sink: int, patterns: Sequence[str],
                 hold_seconds: float = HOLD_SECONDS) -> None:
  """Copies `source` to `sink` until end of file, leaving out each whole line (ending in
  a newline) that one of the regular expressions `patterns` matches in full."""
  noise = re.compile("|".join(f"(?:{pattern})" for pattern in patterns).encode())
  pending = b""    # the unfinished current line, held until its end shows what it is
  passing = False  # part of the current line went out: the rest follows unexamined
  while True:
    if pending and not select.select([source], [], [], hold_seconds)[0]:
      _write_all(sink, pending)
      pending, passing = b"", True
    try:
      chunk = os.read(source, 1 << 16)
    except OSError:  # an unreadable source: its end, as at end of file
      chunk = b""
    if not chunk:
      break
    *lines, pending = _LINE_ENDS.split(pending + chunk)
    kept = []
    for line in lines:
      if passing or not (line.endswith(b"\n") and noise.fullmatch(line, 0, len(line) - 1)):
        kept.append(line)
      passing = False
    if pending and (passing or len(pending) > _MAX_HELD):
      kept.append(pending)
      pending, passing = b"", True
    if kept:
      _write_all(sink, b"".join(kept))
  _write_all(sink, pending)


class _Installed:
  """What `uninstall` needs: the real stderr, the pipe on fd 2, the pump, its owner."""

  def __init__(self, console: int, pipe: os.stat_result, pump: subprocess.Popen,
               stream: io.TextIOWrapper):
    self.console, self.pipe, self.pump, self.stream = console, pipe, pump, stream
    self.pid = os.getpid()

  def on_fd2(self) -> bool:
    """Whether fd 2 still is our pipe (pytest's capfd, for one, swaps it and back)."""
    try:
      now = os.fstat(2)
    except OSError:
      return False
    return (now.st_dev, now.st_ino) == (self.pipe.st_dev, self.pipe.st_ino)


_installed: _Installed | None = None


class _InstallOnImport(importlib.abc.MetaPathFinder):
  """Installs the filter as the first of `packages` starts to import (their shared
  libraries print while they load), then leaves `sys.meta_path`; finds nothing itself."""

  def __init__(self, packages: Sequence[str], patterns: Sequence[str]):
    self.packages, self.patterns = frozenset(packages), tuple(patterns)

  def find_spec(self, name: str, path: object = None, target: object = None) -> None:
    if name in self.packages:
      _disarm()
      install(self.patterns)


def _disarm() -> None:
  """Removes a waiting `install_on_import` (one at most)."""
  sys.meta_path[:] = [finder for finder in sys.meta_path
                      if not isinstance(finder, _InstallOnImport)]


def install_on_import(packages: Sequence[str], patterns: Sequence[str]) -> None:
  """`install(patterns)` when one of the top-level `packages` is first imported, or now
  if one is loaded already: the pump runs only beside programs that load them."""
  _disarm()
  if any(name in sys.modules for name in packages):
    install(patterns)
  else:
    sys.meta_path.insert(0, _InstallOnImport(packages, patterns))


def install(patterns: Sequence[str]) -> bool:
  """From now on, whole lines on fd 2 matching one of `patterns` are dropped; False (and
  nothing changed) where Python's stderr is not fd 2 or no pump process can start."""
  global _installed
  if _installed is not None and _installed.pid == os.getpid() and _installed.on_fd2():
    return True
  stream = sys.stderr
  try:
    if stream is None or stream.fileno() != 2:
      return False  # a test runner's capture or a notebook owns stderr: theirs to show
  except (AttributeError, OSError, ValueError):
    return False
  if os.name != "posix" or not sys.executable:
    return False
  import subprocess  # only here: `configure_process` should cost nothing it does not use
  stream.flush()
  console = os.dup(2)
  read_end, write_end = os.pipe()
  # The pump starts with Ctrl-C and SIGTERM blocked (a mask survives exec): a signal for the
  # command's process group in its first milliseconds must not end it before the command.
  blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
  try:
    # -I -S: the pump imports nothing but the standard library, and starts in milliseconds.
    pump = subprocess.Popen([sys.executable, "-I", "-S", os.path.abspath(__file__), *patterns],
                            stdin=read_end, stdout=console, stderr=console)
  except OSError:
    os.close(console)
    os.close(write_end)
    return False
  finally:
    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    os.close(read_end)
  os.dup2(write_end, 2)
  pipe = os.fstat(write_end)
  os.close(write_end)
  sys.stderr = io.TextIOWrapper(
      io.FileIO(console, "w", closefd=False), encoding=getattr(stream, "encoding", None),
      errors=getattr(stream, "errors", None),
      line_buffering=getattr(stream, "line_buffering", False), write_through=True)
  if _installed is None:
    import atexit
    atexit.register(uninstall)
  _installed = _Installed(console, pipe, pump, sys.stderr)
  return True


def uninstall(timeout: float = _WAIT_FOR_PUMP_SECONDS) -> None:
  """fd 2 back to the real stderr; then waits (up to `timeout`) for the pump to write what
  it still holds, so that a command's last lines come before the shell's next prompt.
  A waiting `install_on_import` is dropped too.

  Runs at exit. A process forked from the installer leaves the pump to its parent."""
  global _installed
  _disarm()
  state, _installed = _installed, None
  if state is None or state.pid != os.getpid():
    return
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (AttributeError, OSError, ValueError):
      pass
  if state.on_fd2():
    os.dup2(state.console, 2)
    if sys.stderr is state.stream:
      sys.stderr = sys.__stderr__  # fd 2 again, the real stderr
  import subprocess
  try:
    state.pump.wait(timeout)
  except subprocess.TimeoutExpired:
    pass  # a child process still holds the pipe: the pump ends after it, on its own


def _pump() -> None:
  """The separate process: stdin (the pipe) to stdout (the real stderr), filtered."""
  # Ctrl-C and a group's SIGTERM are for the command: the pump ends when its input does,
  # after writing the command's last words. (Blocked from the start; ignored too, in case.)
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  try:
    filter_lines(0, 1, sys.argv[1:])
  except OSError:  # the real stderr closed (a reader that quit): as the command would find it
    pass


if __name__ == "__main__":
  _pump()
