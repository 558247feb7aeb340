"""What produced a run: package versions and the code's commit, for comparing runs later."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess

PACKAGES = ("effnetlite", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy",
            "tensorflow", "tensorflow-cpu", "tensorflow-datasets")
_SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def package_versions() -> dict[str, str]:
  """Installed versions of the packages a result depends on (absent ones left out)."""
  versions = {}
  for name in PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  return versions


def code_commit() -> str | None:
  """The git commit of the code that runs, with "-dirty" for uncommitted changes; None
  outside a git checkout."""
  if not os.path.isdir(os.path.join(_SOURCE_ROOT, ".git")):
    return None
  try:
    def git(*args: str) -> str:
      return subprocess.run(["git", "-C", _SOURCE_ROOT, *args], capture_output=True, text=True,
                            timeout=10, check=True).stdout.strip()
    commit = git("rev-parse", "HEAD")
    return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
  except (OSError, subprocess.SubprocessError):
    return None


def provenance() -> dict[str, object]:
  return {"versions": package_versions(), "commit": code_commit()}
