"""The hardware-aware search: candidates' latencies from Vela's estimate for an Ethos-U NPU.

The real search (training, int8 export, Vela) runs narrowed to one grid point at a small
resolution, as test_readme runs it; the labels of table and plot use test_study's stand-in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import optuna
import pytest
from helpers import ROOT
from test_study import fake_test, fake_train, search_config

from effnetlite.errors import UserError
from effnetlite.search import report, storage, study

TARGET = "ethos-u65-256"
ONE_POINT = ["--config.search.tolerance=1.0", "--config.search.alpha_range=(1.2,1.2)",
             "--config.search.beta_range=(1.1,1.1)", "--config.search.gamma_range=(1.15,1.15)"]


@pytest.mark.slow  # a whole search on Vela; the U65 compile itself is tests/export/test_vela.py
def test_search_on_the_ethos_u65_ranks_by_vela_ms(tmp_path):
  pytest.importorskip("ethosu.vela")
  workdir = tmp_path / "search"
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "scripts", "grid_search.py"),
       f"--config={os.path.join(ROOT, 'configs', 'search_lite0.py')}", f"--workdir={workdir}",
       "--config.model.resolution=32", f"--config.dataset.data_dir={tmp_path / 'tfds'}",
       "--config.max_steps=2", *ONE_POINT, "--config.search.objective=accuracy_latency",
       f"--config.search.latency_target={TARGET}"],
      capture_output=True, text=True, timeout=900, cwd=str(tmp_path))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "warning:" not in result.stderr  # int8 I/O: every operator on the NPU
  name = f"compound-lite0-phi1-accuracy_latency-{TARGET}"
  the_study = optuna.load_study(study_name=name, storage=f"sqlite:///{workdir}/study.db")
  (trial,) = the_study.trials
  run_dir = workdir / "runs" / trial.user_attrs["candidate"]
  with open(run_dir / "model-int8.tflite.report.json") as handle:
    npu = json.load(handle)["npu"]
  assert npu["accelerator"] == TARGET and npu["cpu_operators"] == 0
  assert trial.values[1] == trial.user_attrs["latency_ms"] == npu["inference_ms"] > 0
  assert trial.user_attrs["latency_target"] == TARGET
  assert os.path.exists(run_dir / "model-int8_vela.tflite")
  markdown = (workdir / "results.md").read_text()
  assert f"| Vela ms, {TARGET} |" in markdown and markdown in result.stdout
  assert f"Pareto front (EMA top-1 up, latency down):\n- alpha=1.2, beta=1.1, gamma=1.15: " \
         f"EMA top-1 {trial.values[0]:.4f}, {npu['inference_ms']:.3f} ms" in markdown
  assert f"latencies: Vela ms, {TARGET} (Vela's estimate" in markdown
  assert (workdir / "pareto.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("target,label", [("litert", "LiteRT ms on this host"),
                                          (TARGET, f"Vela ms, {TARGET}")])
def test_table_front_and_plot_name_the_latency_source(target, label, tmp_path):
  config = search_config(objective="accuracy_latency", latency_target=target)
  the_study = study.open_study(config, storage.storage_url("", str(tmp_path)),
                               study.default_study_name(config))
  study.run_worker(config, the_study, str(tmp_path), train=lambda c, w, e: fake_train(c, w, e),
                   evaluate_test=fake_test,
                   measure_latency=lambda c, run_dir, output: 1.0 + len(run_dir) % 7)
  assert report.latency_source(report.candidate_rows(the_study)) == label  # the plot's label
  markdown, best = report.write_report(the_study, str(tmp_path))
  assert f"| {label} |" in markdown.splitlines()[0] and f"\nlatencies: {label}" in markdown
  assert best and the_study.study_name.endswith("accuracy_latency" if target == "litert"
                                                 else f"accuracy_latency-{TARGET}")


def test_vela_target_missing_vela_is_one_line_before_training(monkeypatch):
  for module in ("ethosu", "ethosu.vela", "ethosu.vela.architecture_features"):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
  study.check_latency_target(search_config(objective="accuracy"))  # no latency: no Vela
  study.check_latency_target(search_config(objective="accuracy_latency"))  # litert
  with pytest.raises(UserError, match=r"needs Arm's Vela compiler, which is not installed: "
                                      r"pip install ethos-u-vela==5\.2\.0"):
    study.check_latency_target(search_config(objective="accuracy_latency",
                                             latency_target=TARGET))
