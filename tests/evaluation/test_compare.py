"""scripts/compare.py: runs side by side, seeds averaged, other splits refused."""

import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT

from configs import demo
from effnetlite import runs
from effnetlite.errors import UserError
from effnetlite.evaluation import compare
from effnetlite.nn import costs

SPLIT = {"dataset": "effnetlite_digits", "split": "holdout", "holdout_fraction": 0.1,
         "examples": 143, "ids_sha256": "ab" * 32}


def _run(tmp_path, name, seed=0, width=1.0, top1=0.9, split=SPLIT, int8=None):
  """A finished run as train.py leaves it (weights aside): config, a step, final metrics."""
  run = tmp_path / name
  (run / "checkpoints" / "10").mkdir(parents=True)
  config = demo.get_config()
  config.seed, config.model.width = seed, width
  runs.Run(str(run)).save_config(config)
  runs.Run(str(run)).save_final_metrics({
      "step": 10, "ema_eval_top1": top1, "ema_eval_top5": 1.0, "eval_split": split,
      "seed": seed, "session": {"from_step": 0, "wall_seconds": 12.0}, "commit": "c0ffee"})
  if int8 is not None:  # what `eval.py --weights=RUN/x.tflite --output=RUN/eval-int8.json` writes
    (run / "eval-int8.json").write_text(json.dumps({"weights": str(run / "x.tflite"),
                                                    "top1": int8}))
  return str(run)


def test_seeds_average_and_the_table_counts_the_network(tmp_path):
  a = compare.summarise(_run(tmp_path, "a", seed=0, top1=0.90, int8=0.89))
  b = compare.summarise(_run(tmp_path, "b", seed=1, top1=0.94))
  wide = compare.summarise(_run(tmp_path, "w", width=1.1, top1=0.95))
  assert a.group == b.group != wide.group
  assert [len(g) for g in compare.groups([a, b, wide])] == [2, 1]
  assert a.macs == costs.count_macs(1.0, 1.0, 64, 10) and a.params == costs.count_params(1, 1, 10)
  text = compare.table([a, b, wide])
  assert "| a | lite0 | 1 | 1 | 64 | 3,383,818 | 31.4M | 10 | 12 | 0 | 0.9000 | 1.0000 | 0.8900 | - |" \
      in text
  # Two seeds: mean 0.92, sample std 0.0283, by hand.
  assert "| lite0 (w1 d1 r64) | 2 | 0.9200 ± 0.0283 |" in text
  assert "evaluated on effnetlite_digits/holdout (143 images, 10% held out of train" in text
  assert "\ncode: c0ffee" in text
  assert compare.plot([a, b, wide])[:8] == b"\x89PNG\r\n\x1a\n"


def test_runs_on_different_splits_are_refused(tmp_path):
  a = compare.summarise(_run(tmp_path, "a"))
  b = compare.summarise(_run(tmp_path, "b", split={**SPLIT, "split": "test", "examples": 359,
                                                    "holdout_fraction": 0.0}))
  with pytest.raises(UserError, match=r"were evaluated on different splits \(effnetlite_digits/"
                                      r"holdout .* vs effnetlite_digits/test \(359 images"):
    compare.check_same_split([a, b])


def test_unfinished_and_non_runs_get_one_line(tmp_path):
  run = _run(tmp_path, "a")
  os.remove(runs.Run(run).file(runs.Run.FINAL_METRICS))
  with pytest.raises(UserError, match="has not finished"):
    compare.summarise(run)
  with pytest.raises(UserError, match="is not a run directory"):
    compare.summarise(str(tmp_path))


def test_command_prints_the_table_and_writes_the_plot(tmp_path):
  _run(tmp_path, "a", seed=0)
  _run(tmp_path, "b", seed=1, top1=0.8)
  result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "compare.py"), "a", "b",
                           "a", "--plot=curve.png"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr
  assert result.stdout.count("| lite0 |") == 2  # `a` given twice is one run
  assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
  bad = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "compare.py"), "a", "nope"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "nope is not a run" in bad.stderr
  assert len(bad.stderr.strip().splitlines()) == 1
