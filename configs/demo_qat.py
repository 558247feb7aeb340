"""QAT fine-tuning of the demo: the float demo run's weights trained as the int8 network.

  python train.py --config=configs/demo.py --workdir=runs/demo        # the float run first
  python train.py --config=configs/demo_qat.py --workdir=runs/qat     # init_from=runs/demo
  python eval.py --weights=runs/qat                                   # simulated-int8 top-1
  python scripts/export.py --weights=runs/qat --quantize=int8 --io=uint8 \
      --output=runs/qat/qat-uint8.tflite

Another float run (or 'pretrained', or a weights file) goes in with
--config.init_from=RUN. BN is folded with the float run's statistics, frozen;
activation ranges start from 4 training batches and follow a moving average. A few
epochs at a tenth of the demo's learning rate, no warm-up: QAT adapts trained weights to
the int8 grid, it does not relearn them.
"""

from configs import demo

# Where configs/demo.py's run is written by the command above (relative to the working
# directory, as --workdir is).
FLOAT_RUN = "runs/demo"


def get_config():
  config = demo.get_config()
  config.quantization.qat = True
  config.quantization.range_decay = 0.99
  config.init_from = FLOAT_RUN
  config.num_epochs = 3
  config.optimizer.base_learning_rate = config.optimizer.base_learning_rate / 10
  config.optimizer.warmup_epochs = 0.0
  return config
