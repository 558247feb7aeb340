"""Compound-scaling search: candidate set, realised cost, restart, worker split, bad ranges."""

import json
import os
import subprocess
import sys

import pytest

from configs import search_lite0
from effnetlite import scaling, search
from effnetlite.errors import UserError
from helpers import ROOT


def _config(**search_overrides):
  config = search_lite0.get_config()
  config.search.update(search_overrides)
  return config


def test_known_grid_gives_expected_candidates():
  keys = [c.key for c in search.candidates(_config())]
  # Hand-checked: realised cost within 8% of 2x lite0@64 after rounding; grid points that
  # build an already-kept network (e.g. depth 1.1 vs 1.2 give the same repeats) are dropped.
  assert keys == ["a1.000_b1.100_g1.100", "a1.100_b1.200_g1.000", "a1.300_b1.200_g1.000",
                  "a1.000_b1.100_g1.200", "a1.100_b1.000_g1.100"]


def test_realised_cost_is_measured_on_the_built_network():
  config = _config()
  base = scaling.count_macs(1.0, 1.0, 64)
  for candidate in search.candidates(config):
    assert abs(candidate.macs / base - 2) <= 0.08 * 2
    assert candidate.macs == scaling.count_macs(candidate.width, candidate.depth,
                                                candidate.resolution)
    assert candidate.nominal == pytest.approx(candidate.alpha * candidate.beta ** 2 *
                                              candidate.gamma ** 2)
    assert candidate.resolution % 8 == 0


@pytest.mark.parametrize("overrides,message", [
    ({"alpha_range": (0.9, 1.2)}, "coefficients must be >= 1"),
    ({"beta_range": (1.2, 1.0)}, "empty grid"),
    ({"tolerance": 0.0001}, "no grid point costs 2x the base"),
])
def test_bad_ranges(overrides, message):
  with pytest.raises(UserError, match=message):
    search.candidates(_config(**overrides))


def test_workers_split_without_overlap_or_gaps():
  grid = search.candidates(_config())
  shares = [search.my_candidates(grid, i, 3) for i in range(3)]
  keys = [c.key for share in shares for c in share]
  assert sorted(keys) == sorted(c.key for c in grid) and len(keys) == len(set(keys))


def test_restart_skips_finished_and_records_failures(tmp_path):
  config = _config()
  trained = []

  def fake_train(derived, workdir):
    trained.append(derived.model.name)
    if derived.model.resolution == 80:
      raise RuntimeError("out of memory")
    return {"eval_top1": derived.model.width / 2, "ema_eval_top1": derived.model.depth / 2}
  search.run_search(config, str(tmp_path), train=fake_train)
  assert len(trained) == 5
  rows = {r["key"]: r for r in search.read_results(str(tmp_path))}
  assert rows["a1.000_b1.100_g1.200"]["status"].startswith("failed: RuntimeError")
  trained.clear()
  search.run_search(config, str(tmp_path), train=fake_train)  # restart
  assert trained == ["lite0_a1.000_b1.100_g1.200"]  # only the failed one again
  markdown, best = search.write_report(str(tmp_path))
  assert best["key"] == "a1.300_b1.200_g1.000" and "best: alpha=1.3" in markdown
  assert os.path.getsize(tmp_path / "pareto.png") > 1000


@pytest.mark.slow
def test_real_search_on_demo_data_with_two_workers(tmp_path):
  """Two workers into one workdir, then a report: the documented 2-core command."""
  for worker in (0, 1):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "grid_search.py"),
                             f"--config={os.path.join(ROOT, 'configs', 'search_lite0.py')}",
                             f"--workdir={tmp_path}", f"--worker={worker}", "--num_workers=2"],
                            capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
  rows = search.read_results(str(tmp_path))
  assert len(rows) == 5 and all(r["status"] == "ok" for r in rows)
  assert (tmp_path / "results.md").exists() and (tmp_path / "pareto.png").exists()
  assert json.loads((tmp_path / "results" / f"{rows[0]['key']}.json").read_text())["ema_top1"]
