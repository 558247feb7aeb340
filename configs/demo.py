"""Demo: the lite0 architecture on the bundled offline digits, about 5 minutes on 2 CPU cores.

Digits are 64x64 renderings of scikit-learn's 8x8 digits; at resolution 64 the
network ends in a 2x2 map. Crops stay large and flips are off (a mirrored
digit is another symbol); the schedule is shortened to fit 20 epochs (~440 steps).
"""

from effnetlite.config import base_config, short_run_recipe


def get_config():
  config = base_config("lite0", width=1.0, depth=1.0, resolution=64, dropout_rate=0.2)
  config.dataset.name = "digits"
  config.dataset.eval_split = "test"
  config.dataset.num_classes = 10
  config.augment.area_range = (0.5, 1.0)
  config.augment.random_flip = False
  config.batch_size = 64
  config.eval_batch_size = 128
  config.num_epochs = 20
  short_run_recipe(config, warmup_epochs=2)
  config.checkpoint_every_steps = 200
  return config
