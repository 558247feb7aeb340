"""Compound-scaling search around lite0 on the bundled digits (proxy schedule, 2-core friendly).

The paper fixes phi = 1 and searches alpha * beta^2 * gamma^2 ~= 2 with all >= 1;
here the constraint is checked on the *built* network's multiply-adds. The
proxy trains each candidate for a few epochs of the demo task at base
resolution 64: enough to rank candidates, not to reach final accuracy.
"""

import ml_collections

from configs import demo


def get_config():
  config = demo.get_config()
  config.num_epochs = 4               # the demo task reaches ~80-90% by then: enough to rank
  config.optimizer.warmup_epochs = 1
  config.ema_decay = 0.95
  config.eval_every_steps = 100_000  # evaluate once, at the end
  config.checkpoint_every_steps = 100_000
  config.search = search = ml_collections.ConfigDict()
  search.phi = 1
  search.alpha_range = (1.0, 1.4)   # depth
  search.beta_range = (1.0, 1.2)    # width
  search.gamma_range = (1.0, 1.3)   # resolution
  search.step = 0.1
  search.tolerance = 0.08           # |realised / 2^phi - 1| <= tolerance
  return config
