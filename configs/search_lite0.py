"""Compound-scaling search around lite0 on the bundled digits (proxy schedule, 2-core friendly).

The paper fixes phi = 1 and keeps the points with alpha * beta^2 * gamma^2 within
8% of 2, all >= 1; each candidate's realised family (phi = 1..4, built at 224 px,
where lite0's coefficients are used) is shown beside it, and families that depart
from 2^phi by more than 20% are dropped. The proxy trains each candidate for a
few epochs of the demo task at base resolution 64: enough to rank candidates, not
to reach final accuracy. Each candidate is evaluated every epoch, so the pruner
can stop weak ones early.

Demo-sized ranges: alpha 1.1-1.4, beta 1.0-1.1, gamma 1.1-1.2 hold 6 lawful points,
3 of which keep their family within 20% of 2^phi. The paper-sized grid (alpha
1.0-1.4, beta 1.0-1.2, gamma 1.0-1.3) holds 14 lawful points:
  --config.search.alpha_range=1.0,1.4 --config.search.beta_range=1.0,1.2 \
  --config.search.gamma_range=1.0,1.3
"""

import ml_collections

from configs import demo


def get_config():
  config = demo.get_config()
  config.num_epochs = 4               # the demo task reaches ~80-90% by then: enough to rank
  config.optimizer.warmup_epochs = 1
  config.ema_decay = 0.95
  config.eval_every_steps = 0        # every epoch: the pruner's intermediate values
  # A candidate retried after its worker died resumes from at most a minute ago (the steps
  # of a proxy run are short: time, not a step count, bounds what a retry repeats).
  config.checkpoint_every_steps = 100_000
  config.checkpoint_every_minutes = 1.0
  # Candidates are ranked on 10% of each class of the training split, held out (by a hash
  # of each example's id) and never trained on; the test split is reported after ranking.
  config.dataset.holdout_fraction = 0.1
  config.dataset.eval_split = "holdout"
  config.search = search = ml_collections.ConfigDict()
  search.phi = 1
  search.alpha_range = (1.1, 1.4)   # depth
  search.beta_range = (1.0, 1.1)    # width
  search.gamma_range = (1.1, 1.2)   # resolution
  search.step = 0.1
  search.tolerance = 0.08           # |alpha * beta^2 * gamma^2 / 2 - 1| <= tolerance
  search.target_resolution = 224    # lite0's: the realised family is counted there
  search.family_phis = 4            # phi = 1..4 (lite1-lite4's range)
  search.max_family_departure = 0.2  # drop families off 2^phi by > 20% at some phi (0: keep)
  search.seeds = 2                  # per candidate: initialisation and data order together
  search.test_split = "test"        # evaluated after the ranking, reported apart ('': none)
  # grid_search.py --proxy_check: the top K retrained with a longer schedule, and Kendall's
  # tau between the proxy's ranking and theirs.
  search.proxy_check_top_k = 3
  search.proxy_check_epochs = 12.0  # the longer schedule (the proxy's: config.num_epochs)
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
