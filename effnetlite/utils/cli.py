"""The one command-line layer of train.py, eval.py, scripts/ and benchmarks/.

Every entry point defines absl flags with the helpers here and calls `run(main)`:
  - bad flags, unknown config keys, a missing or broken config file and every
    `UserError` become one line, `error: ...`, and exit status 2;
  - path flags are made absolute as they are parsed (the only place command-line
    paths enter the library), so relative paths work from any directory;
  - the malloc re-exec (`allocator.prefer_reexec`) comes first, before flags parse: a
    config file given on the command line is evaluated once per command;
  - `effnetlite.configure_process()` runs before `main` (with `--compilation_cache` and
    `--verbose`, flags of every entry point), and entry points import JAX/TensorFlow
    inside `main`, after the flags and the config are checked: bad input answers in
    about a second, before anything is built or compiled.
Process-wide settings (the allocator, the stderr filter, log levels) are made here, by
the commands, never when the library is imported or called.
"""

from __future__ import annotations

import errno
import os
import re
import sys
from typing import Any, Callable, NoReturn

from absl import app, flags
from ml_collections.config_flags import config_flags  # the module: its parser and flag classes

from effnetlite import runs, validation
from effnetlite.errors import UserError, exit_with
from effnetlite.utils import allocator, files, process

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _PathParser(flags.ArgumentParser):
  """A path flag: `~` expanded and made absolute against the current directory."""

  def parse(self, argument: str) -> str:
    return validation.absolute_path(argument)

  def flag_type(self) -> str:
    return "path"


class _WeightsParser(flags.ArgumentParser):
  """'pretrained', 'random' or an existing path (absolute): a missing file fails at once."""

  def __init__(self, tflite: bool):
    self.tflite = tflite

  def parse(self, argument: str) -> str:
    path = validation.check_weights(argument, tflite=self.tflite)
    if os.path.isdir(path):  # inside a run: one of the documented forms
      try:
        runs.run_weights(path)
      except UserError as error:
        raise UserError(f"--weights={argument}: {error}") from None
    return path

  def flag_type(self) -> str:
    return "weights"


class _ConfigFileParser(config_flags.ConfigFileFlagParser):
  """ml_collections' config-file parser, with one-line errors for missing or broken files.

  The stock parser defers a missing file to an IOError on first access and
  lets syntax and import errors out as tracebacks.
  """

  def parse(self, path: str) -> Any:
    path = os.path.expanduser(path)  # the shell leaves `--config=~/...` unexpanded
    file = path.split(":", 1)[0]
    if file.endswith(".json") or runs.Run(file).is_run():
      config = runs.load_config(file)  # a run's saved config (or the run directory itself)
      config.lock()
      return config
    if not os.path.isfile(file):
      raise UserError(f"--{self.name}={path}: config file {validation.absolute_path(file)} "
                      f"does not exist; {_config_suggestion(file)}")
    try:
      return super().parse(path)
    except Exception as error:  # noqa: BLE001 - any failure of user code in the config file
      original = error.__context__ if isinstance(error, (TypeError, ValueError)) and (
          error.__context__ is not None) else error
      where = getattr(original, "lineno", None)
      raise UserError(f"--{self.name}={path}: the config file failed to load "
                      f"({type(original).__name__}{f' at line {where}' if where else ''}: "
                      f"{str(original).splitlines()[0] if str(original) else ''}); fix it "
                      "or start from configs/lite0.py") from None


def _config_suggestion(file: str) -> str:
  """What to pass instead: the checkout's own file of that name, wherever the user is."""
  shipped = os.path.join(REPO_ROOT, "configs", os.path.basename(file))
  if os.path.isfile(shipped):
    return f"did you mean {shipped}?"
  return (f"pass a config file such as {os.path.join(REPO_ROOT, 'configs', 'lite0.py')} or a "
          f"run's {runs.Run.CONFIG}")


CONFIG_HELP = (f"Config file: configs/*.py, or a training run's directory or {runs.Run.CONFIG}. "
               "Override any key with --config.KEY=VALUE; `python scripts/config_keys.py` "
               "lists every key with its default, type and allowed values.")


def DEFINE_config_file(name: str = "config", default: str | None = None,  # noqa: N802
                       help_string: str = CONFIG_HELP, required: bool = False,
                       from_weights: bool = False) -> flags.FlagHolder:
  """config_flags.DEFINE_config_file with one-line errors; `--NAME.KEY=VALUE` overrides.

  `from_weights`: for commands with --weights, a training run given there and no
  --config make the run's config the default (`run_config_default`). Decided here, before
  the flag exists: ml_collections parses the default and its overrides as it defines it.

  A relative `default` is taken from the repository root, so the default
  config is found from any current directory.
  """
  allocator.prefer_reexec()  # before the default file is evaluated, as flags are defined
  if default and not os.path.isabs(default):
    default = os.path.join(REPO_ROOT, default)
  if from_weights:
    default = run_config_default(sys.argv) or default
  # config_flags exposes no parser argument; its _ConfigFlag is the flag class it uses.
  flag = config_flags._ConfigFlag(  # pylint: disable=protected-access
      parser=_ConfigFileParser(name=name, lock_config=True),
      serializer=flags.ArgumentSerializer(), name=name, default=default,
      help_string=help_string, flag_values=flags.FLAGS)
  holder = flags.DEFINE_flag(flag, flags.FLAGS)
  if required:
    flags.mark_flag_as_required(name)
  return holder


def DEFINE_path(name: str, default: str | None, help_string: str,  # noqa: N802
                required: bool = False, short_name: str | None = None) -> flags.FlagHolder:
  """A string flag holding a path, made absolute when parsed ('' stays '')."""
  holder = flags.DEFINE(_PathParser(), name, default, help_string,
                        serializer=flags.ArgumentSerializer(), short_name=short_name)
  if required:
    flags.mark_flag_as_required(name)
  return holder


def DEFINE_weights(default: str = "pretrained", tflite: bool = False,  # noqa: N802
                   help_string: str = "'pretrained', a weights file or a training run "
                   "directory.") -> flags.FlagHolder:
  """--weights: a keyword or an existing path, checked before any data is opened."""
  return flags.DEFINE(_WeightsParser(tflite), "weights", default, help_string,
                      serializer=flags.ArgumentSerializer())


def _flag_value(argv: list[str], name: str) -> str | None:
  """The last `--name=value` or `--name value` of a command line, before flags parse."""
  value = None
  for i, arg in enumerate(argv[1:], start=1):
    if arg.startswith(f"--{name}="):
      value = arg.split("=", 1)[1]
    elif arg == f"--{name}" and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def run_config_default(argv: list[str]) -> str | None:
  """`--weights=RUN` (any of its documented forms) without `--config`: the run's directory,
  so the run's own config is the config.

  Commands that take both flags (eval.py, export.py, predict.py) then need nothing the
  training command was given; `--config.KEY=VALUE` overrides still apply to it.
  """
  if _flag_value(argv, "config") is not None:
    return None
  weights = validation.absolute_path(_flag_value(argv, "weights") or "")
  try:
    named = runs.run_weights(weights) if os.path.isdir(weights) else None
  except UserError:  # a path inside a run that names no weights: --weights says so itself
    return None
  return None if named is None else named.run.path


_HELP_FLAGS = {"--help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml"}


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser with one line for every failure (for `app.run(flags_parser=...)`)."""
  try:
    return flags.FLAGS(argv)
  except SystemExit as done:  # absl's --help prints the flags, then exits 1: a request met
    if done.code == 1 and set(argv[1:]) & _HELP_FLAGS:
      sys.exit(0)
    raise
  except flags.Error as error:
    cause = error.__context__
    if isinstance(cause, UserError):
      exit_with(cause)
    exit_with(UserError(str(error).splitlines()[0]))
  except (AttributeError, KeyError) as error:
    # ml_collections raises these for an override of a key the config does not have, with
    # the message (and its "Did you mean" hint) nested in a KeyError inside the args.
    while error.args and isinstance(error.args[0], BaseException):
      error = error.args[0]
    key, _, hint = str(error.args[0] if error.args else error).partition("\n")
    suggestion = re.search(r'Did you mean "([^"]+)"', hint)
    exit_with(UserError(f"the config has no key {key.strip(chr(39) + chr(34))!r}"
                        f"{f' (did you mean {suggestion[1]!r}?)' if suggestion else ''}; "
                        "check the --config.KEY=VALUE overrides against the config file"))
  except (ValueError, TypeError) as error:
    exit_with(UserError(f"bad command-line flag: {str(error).splitlines()[0]}"))


def no_positional_arguments(argv: list[str]) -> None:
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {' '.join(argv[1:])}; flags take the form "
                    "--name=value and config overrides --config.KEY=VALUE")


class _CacheParser(flags.ArgumentParser):
  """'none', or a directory that exists or can be created (nothing is created here)."""

  def parse(self, argument: str) -> str:
    if argument == process.NO_CACHE:
      return argument
    path = validation.absolute_path(argument)
    problem = files.unwritable_directory(path)
    if problem:
      raise UserError(f"--compilation_cache={argument} is not a writable directory ({problem}); "
                      f"pass one you can write to, or '{process.NO_CACHE}'")
    return path

  def flag_type(self) -> str:
    return "directory or 'none'"


_COMPILATION_CACHE = flags.DEFINE(
    _CacheParser(), "compilation_cache", None, "Directory of compiled XLA programs kept "
    "between runs, or 'none'; default $EFFNETLITE_COMPILATION_CACHE, else "
    "~/.cache/effnetlite/xla.", serializer=flags.ArgumentSerializer())
_VERBOSE = flags.DEFINE_bool(
    "verbose", False, "Show the frameworks' own log lines (TensorFlow, absl, the TFLite "
    "converter, LiteRT), which are kept off the console by default.")
# The DEFINE_* helpers above define flags for the command that calls them: absl credits
# them to that command, so its --help lists them (not only --helpfull).
flags.disclaim_key_flags()


def run(main: Callable[[list[str]], Any]) -> NoReturn:
  """Parses flags, applies the process settings, runs `main(argv)`; UserError -> exit 2."""
  # A re-exec runs everything before it again: here, ml_collections has not yet evaluated
  # the --config file (it does while flags parse).
  allocator.prefer_reexec()

  def wrapped(argv: list[str]) -> Any:
    process.configure_process(compilation_cache=_COMPILATION_CACHE.value,
                              verbose=_VERBOSE.value)
    try:
      return main(argv)
    except UserError as error:
      exit_with(error)
    except OSError as error:  # a full disk anywhere (metrics, configs, exports): one line
      if error.errno != errno.ENOSPC:
        raise
      exit_with(UserError(f"no space left on device writing {error.filename or 'a file'}; "
                          "free space and rerun"))
    except KeyboardInterrupt:  # Ctrl-C outside training (which saves and says so itself)
      print("stopped by Ctrl-C", file=sys.stderr, flush=True)
      sys.exit(130)

  for flag in (_COMPILATION_CACHE, _VERBOSE):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[flag.name])
  app.run(wrapped, flags_parser=parse_flags)
  sys.exit(0)  # app.run exits itself; this tells type checkers so
