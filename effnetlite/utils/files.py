"""Writing results safely: one atomic writer for every file the framework produces.

Readers (a second search worker, TensorBoard, a user's script) must never see a
half-written file, and a run killed mid-write must leave the previous version.
Writes go to a uniquely named temporary file beside the target, then are renamed
over it. Through etils.epath, so a workdir on a bucket works the same.
"""

from __future__ import annotations

import os
import uuid

from etils import epath

from effnetlite.errors import UserError


def write_atomically(path: str | os.PathLike, data: str | bytes) -> None:
  """Writes `data` (text as UTF-8) to `path` completely or not at all."""
  target = epath.Path(path)
  temporary = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"
  try:
    if isinstance(data, str):
      temporary.write_text(data, encoding="utf-8")
    else:
      temporary.write_bytes(data)
    temporary.replace(target)
  except BaseException:
    if temporary.exists():
      temporary.unlink()
    raise


def check_writable(path: str, what: str = "--output") -> None:
  """Fails in one line, before any work, when `path`'s directory cannot take the file."""
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    raise UserError(f"{what}={path}: directory {directory} does not exist; create it or pick "
                    "another path")
  if not os.access(directory, os.W_OK):
    raise UserError(f"{what}={path}: directory {directory} is not writable; pick another path")
  if os.path.isdir(path) and not path.endswith(os.sep):
    raise UserError(f"{what}={path} is a directory; pass a file path")


def unwritable_directory(path: str) -> str | None:
  """Why `path` cannot be used or created as a writable directory, or None if it can.

  Looks at the nearest part of the path that exists and creates nothing.
  """
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    return f"{existing} is not a directory"
  if not os.access(existing, os.W_OK | os.X_OK):
    return f"{existing} is read-only"
  return None
