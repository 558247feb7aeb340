"""Compound-scaling search around lite0 on the bundled digits (proxy schedule, 2-core friendly).

The paper fixes phi = 1 and searches alpha * beta^2 * gamma^2 ~= 2 with all >= 1;
here the constraint is checked on the *built* network's multiply-adds. The
proxy trains each candidate for a few epochs of the demo task at base
resolution 64: enough to rank candidates, not to reach final accuracy. Each
candidate is evaluated every epoch, so the pruner can stop weak ones early.
"""

import ml_collections

from configs import demo


def get_config():
  config = demo.get_config()
  config.num_epochs = 4               # the demo task reaches ~80-90% by then: enough to rank
  config.optimizer.warmup_epochs = 1
  config.ema_decay = 0.95
  config.eval_every_steps = 0        # every epoch: the pruner's intermediate values
  config.checkpoint_every_steps = 100_000
  config.search = search = ml_collections.ConfigDict()
  search.phi = 1
  search.alpha_range = (1.0, 1.4)   # depth
  search.beta_range = (1.0, 1.2)    # width
  search.gamma_range = (1.0, 1.3)   # resolution
  search.step = 0.1
  search.tolerance = 0.08           # |realised / 2^phi - 1| <= tolerance
  search.objective = "accuracy"     # accuracy | accuracy_latency (measured TFLite latency)
  # none | median | hyperband (single objective only). On this 4-epoch proxy the EMA stays
  # near chance until the last epochs, so a pruner stops late and can stop good candidates:
  # use one with longer proxies.
  search.pruner = "none"
  search.heartbeat_seconds = 30     # a worker silent for 2x this is dead: its candidate retried
  search.max_retries = 3            # retries of a candidate whose workers died
  search.latency_format = "int8"    # float | int8: the TFLite file timed with LiteRT
  # litert: measured with LiteRT on this host; or an Ethos-U NPU (ethos-u65-256: NXP i.MX 93),
  # Vela's estimate for the int8 file (pip install ethos-u-vela==5.2.0).
  search.latency_target = "litert"
  search.latency_threads = 1        # LiteRT threads, batch 1
  search.latency_budget_ms = 0.0    # > 0: an Optuna constraint latency <= budget
  return config
