"""Process-wide settings for programs that train or serve: the one opt-in call.

`import effnetlite` and the library's functions change nothing in the process (no
hook, signal handler or environment variable). The CLIs (through
`effnetlite.utils.cli.run`), the benchmarks and the tests call `configure_process()`
before JAX or TensorFlow start; a library user who wants the same speed and quiet
console calls it first thing too.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import time

from effnetlite.utils import allocator

COMPILATION_CACHE_ENV = "EFFNETLITE_COMPILATION_CACHE"
NO_CACHE = "none"
# Bounding the cache also makes JAX lock it (filelock), so that processes sharing it (search
# workers, pytest-xdist) never read an entry another one is still writing.
COMPILATION_CACHE_BYTES = 4 << 30
_IMPORTED_AT = time.time()
_state = {"configured": False, "notice_given": False}
# A lite0 training step under glibc's defaults against `configure_process()`, measured with
# benchmarks/throughput.py --plain_loop (benchmarks/README.md).
PLAIN_LOOP_SLOWDOWN = "about 1.4x"


def quiet_library_logs() -> None:
  """Only errors from TensorFlow, tfds and orbax; JAX's backend probing stays off the console.

  Our own warnings (e.g. skipped unreadable images) go through the root logger
  and still show.
  """
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # read by TensorFlow's C++ at import
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.ERROR)  # tfds and orbax log through absl
  for name in ("absl", "tensorflow", "tensorflow_datasets", "orbax"):
    logging.getLogger(name).setLevel(logging.ERROR)
  logging.getLogger("jax").setLevel(logging.WARNING)


# Lines that native code prints on every run and that no setting of their library turns off
# (TensorFlow 2.21, ai-edge-litert 2.3): `quiet_native_logs` drops exactly these, whole lines.
NATIVE_NOISE = (
    # absl's C++ logging, before the first message of each library that links its own absl
    # (libtensorflow_framework.so.2 and the profiler plugin _pywrap_profiler_plugin.so).
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    # TensorFlow's port.cc, from both libraries' static initialisers: absl's INFO format. The
    # line goes; oneDNN stays on (TF_ENABLE_ONEDNN_OPTS=0 would change the numerics).
    r"I\d{4} [\d:.]+ +\d+ port\.cc:\d+\] oneDNN custom operations are on\. .*",
    # The TFLite converter's quantizer: llvm::dbgs(), which is plain stderr in release builds.
    r"fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, "
    r"output_inference_type: \w+",
    # LiteRT's minimal logger (fprintf, INFO) when it applies the default XNNPACK delegate.
    r"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.",
)
# The packages whose native code prints `NATIVE_NOISE` (the converter is TensorFlow's).
NATIVE_NOISE_PACKAGES = ("tensorflow", "ai_edge_litert")


def quiet_native_logs() -> None:
  """Keeps `NATIVE_NOISE` off stderr; every other byte (C++ errors, tracebacks) passes.

  A filter on file descriptor 2 (`stderr_filter`) because none of these lines has a knob
  that acts before it prints: TF_CPP_MIN_LOG_LEVEL governs TensorFlow's own logger, not the
  absl logging that prints the oneDNN line while the libraries load; absl's C++ level and
  stderr threshold are set only by C++ calls (no environment variable, its --minloglevel
  flag is not linked in; GLOG_minloglevel and the like are not read); llvm::dbgs() and
  LiteRT's logger have no switch short of dropping the XNNPACK delegate, i.e. its speed.
  The filter starts when one of `NATIVE_NOISE_PACKAGES` is first imported (now, if one
  is loaded already): a command that never loads them runs without it. Nothing where
  Python's stderr is not fd 2 then (pytest's capture, a notebook): left to them.
  """
  from effnetlite.utils import stderr_filter
  stderr_filter.install_on_import(NATIVE_NOISE_PACKAGES, NATIVE_NOISE)


def default_compilation_cache() -> str:
  """$EFFNETLITE_COMPILATION_CACHE, else a per-user directory ($XDG_CACHE_HOME or ~/.cache)."""
  if os.environ.get(COMPILATION_CACHE_ENV):
    return os.environ[COMPILATION_CACHE_ENV]
  cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
  return os.path.join(os.path.expanduser(cache_home), "effnetlite", "xla")


def enable_compilation_cache(directory: str) -> None:
  """JAX's persistent compilation cache in `directory` ("none": off).

  Every program is kept, however fast it compiled: a second run of a command, eval.py
  on the model it trained and each search candidate of an already-seen shape load
  their executables instead of compiling them. Set before JAX starts, through JAX's
  own environment variables, so the CLIs do not import JAX to apply it.
  """
  if directory == NO_CACHE:
    settings = {"jax_compilation_cache_dir": ""}
  else:
    settings = {"jax_compilation_cache_dir": os.path.abspath(os.path.expanduser(directory)),
                "jax_persistent_cache_min_compile_time_secs": 0,
                "jax_compilation_cache_max_size": COMPILATION_CACHE_BYTES}
  if "jax" in sys.modules:
    import jax
    for name, value in settings.items():
      jax.config.update(name, value)
  else:
    os.environ.update({name.upper(): str(value) for name, value in settings.items()})


def seconds_since_start() -> float:
  """Wall time since this process started (since effnetlite was imported, off Linux)."""
  try:
    with open("/proc/self/stat", encoding="ascii") as handle:
      started_ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime", encoding="ascii") as handle:
      uptime = float(handle.read().split()[0])
    return uptime - started_ticks / os.sysconf("SC_CLK_TCK")
  except (OSError, ValueError, IndexError):
    return time.time() - _IMPORTED_AT


def skip_keras_import() -> None:
  """TensorFlow imports Keras eagerly (seconds of every command's start) although nothing
  here uses it. With TF_USE_LEGACY_KERAS=1 TensorFlow would take tf_keras instead; where
  that is not installed, its optional import fails quietly and no Keras loads. Left alone
  when TF_USE_LEGACY_KERAS is set already or tf_keras is installed."""
  if "TF_USE_LEGACY_KERAS" not in os.environ and importlib.util.find_spec("tf_keras") is None:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"


def notice_unconfigured_cpu_process() -> None:
  """Once per process: a program that trains on CPU without `configure_process()` is told
  what it misses (library users' own loops; the commands configure themselves)."""
  if _state["configured"] or _state["notice_given"] or not allocator.is_glibc():
    return
  _state["notice_given"] = True
  import jax
  if jax.default_backend() != "cpu":
    return
  logging.getLogger("effnetlite").warning(
      "effnetlite: call effnetlite.configure_process() first thing in your program: "
      "with glibc's default malloc, XLA:CPU faults every step's temporaries back in, and "
      "training on CPU runs %s slower (benchmarks/README.md)", PLAIN_LOOP_SLOWDOWN)


def configure_process(malloc_tuning: bool = True, compilation_cache: str | None = None,
                      keras: bool = False, verbose: bool = False) -> None:
  """glibc malloc tuning (see `allocator`), the persistent compilation cache and a quiet
  console (framework logs and native noise off), before JAX starts.

  Call it first thing in a program: it re-executes the program once (same arguments,
  same process id) so that glibc starts with the malloc tunables, which a running
  process cannot take, and then gives the environment the user's GLIBC_TUNABLES back
  (child processes are not tuned); where it cannot (notebooks, pytest, JAX already
  computing) it applies what mallopt can. `EFFNETLITE_MALLOC_TUNING=0` (or
  `malloc_tuning=False`) leaves the allocator alone; `compilation_cache` defaults to
  `default_compilation_cache()`, and "none" turns the cache off. `keras=True` lets
  TensorFlow load Keras, for programs that use `tf.keras` beside this library.
  `verbose=True` (the commands' --verbose) leaves every library's logging as it comes,
  for when something goes wrong inside one.
  """
  if malloc_tuning:
    allocator.prefer_reexec()  # returns where it cannot, or in the re-executed program
    allocator.tune_in_process()
  _state["configured"] = True
  if not keras:
    skip_keras_import()
  enable_compilation_cache(compilation_cache or default_compilation_cache())
  if verbose:
    from effnetlite.utils import stderr_filter
    stderr_filter.uninstall()  # an earlier call's filter, if any
  else:
    quiet_library_logs()
    quiet_native_logs()
