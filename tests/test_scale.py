"""scripts/scale.py: the configs it writes keep the base's dataset and recipe."""

import importlib.util
import os
import subprocess
import sys

from helpers import ROOT

from effnetlite import runs
from effnetlite.config import base_config
from effnetlite.nn import scaling
from effnetlite.validation import validate_config


def _load(path: str):
  spec = importlib.util.spec_from_file_location("scaled", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_scaled_configs_keep_every_other_key_of_the_base(tmp_path):
  demo = os.path.join(ROOT, "configs", "demo.py")
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "scripts", "scale.py"), f"--config={demo}",
       "--phi=1..2", "--output_dir=scaled", "--config.batch_size=32"],
      cwd=tmp_path, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  written = [line.split(" ", 1)[1] for line in result.stdout.splitlines()
             if line.startswith("wrote ")]
  assert written == [str(tmp_path / "scaled" / f"lite0_phi{phi}.py") for phi in (1, 2)]
  spec = importlib.util.spec_from_file_location("demo", demo)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  base = module.get_config()
  base.batch_size = 32
  for phi, path in zip((1, 2), written):
    scaled = validate_config(_load(path))
    expected = scaling.compound_scale(1.0, 1.0, 64, 1.2, 1.1, 1.15, phi)
    assert (scaled.model.width, scaled.model.depth, scaled.model.resolution) == (
        expected.width, expected.depth, expected.resolution)
    assert scaled.model.name == f"lite0_phi{phi}"
    changed = {key for key, _, _ in runs.differences(base, scaled)}
    assert changed == {"model.name", "model.width", "model.depth", "model.resolution"}
    assert scaled.dataset.name == "digits" and scaled.dataset.num_classes == 10
    assert scaled.num_epochs == 20 and scaled.batch_size == 32
    assert scaled.dataset.name != base_config().dataset.name  # the base's, not the defaults
