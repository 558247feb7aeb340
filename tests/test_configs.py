"""The config files and the library's variant table agree."""

import importlib.util
import pathlib

from helpers import ROOT

from effnetlite import config as config_lib

CONFIGS = pathlib.Path(ROOT) / "configs"


def test_config_files_match_library_table():
  for name, row in config_lib.VARIANTS.items():
    spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.get_config().model
    assert (model.width, model.depth, model.resolution, model.dropout_rate) == row
