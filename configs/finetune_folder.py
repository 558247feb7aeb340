"""Fine-tunes pretrained lite0 on your own image folder.

  python train.py --config=configs/finetune_folder.py --workdir=runs/ft \
      --config.dataset.data_dir=/data/flowers
  python eval.py --weights=runs/ft            # the run's own config; names from the folders

Layout: <data_dir>/train/<class>/<image> and <data_dir>/validation/<class>/<image>.
The class count and names come from the train folder's sub-folders and are recorded
in the run. The ImageNet backbone is imported and the classifier re-initialised for
them; a short, gentle schedule (no long warm-up, small LR) suits it.
"""

from effnetlite.config import base_config, short_run_recipe


def get_config():
  config = base_config("lite0", width=1.0, depth=1.0, resolution=224, dropout_rate=0.2)
  config.init_from = "pretrained"
  config.dataset.name = "folder"
  config.dataset.data_dir = ""        # required: --config.dataset.data_dir=...
  config.dataset.num_classes = -1     # from the data: one class per sub-folder
  config.dataset.shuffle_buffer = 4096
  config.batch_size = 32
  config.eval_batch_size = 64
  config.num_epochs = 10
  config.optimizer.base_learning_rate = 0.004
  short_run_recipe(config, warmup_epochs=1)
  config.checkpoint_every_steps = 500
  return config
