"""Summed metrics against NumPy: masked examples ignored, exact averages over batches."""

import jax.numpy as jnp
import numpy as np
import pytest

from effnetlite.errors import UserError
from effnetlite.evaluation import metrics


def _numpy_sums(logits, labels, mask):
  shifted = logits - logits.max(-1, keepdims=True)
  loss = -(shifted[np.arange(len(labels)), labels] - np.log(np.exp(shifted).sum(-1)))
  order = np.argsort(-logits, -1, kind="stable")
  return {"count": mask.sum(), "loss": (loss * mask).sum(),
          "top1": ((order[:, 0] == labels) * mask).sum(),
          "top5": ((order[:, :5] == labels[:, None]).any(-1) * mask).sum()}


def test_summed_metrics_match_numpy_and_ignore_masked_examples():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(16, 10)).astype(np.float32)
  labels = rng.integers(0, 10, 16)
  labels[:4] = logits[:4].argmax(-1)  # some hits for top-1
  mask = np.ones(16, np.float32)
  mask[-3:] = 0.0  # padding of the last batch
  ours = metrics.summed_metrics(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask), 10)
  expected = _numpy_sums(logits, labels, mask)
  assert float(ours["count"]) == 13
  for key in ("top1", "top5"):
    assert float(ours[key]) == expected[key]
  assert float(ours["loss"]) == pytest.approx(float(expected["loss"]), rel=1e-5)


def test_averages_over_batches_are_exact():
  rng = np.random.default_rng(1)
  batches = [(rng.normal(size=(n, 10)).astype(np.float32), rng.integers(0, 10, n)) for n in
             (8, 8, 5)]
  totals = None
  for logits, labels in batches:
    totals = metrics.add(totals, metrics.summed_metrics(logits, labels, np.ones(len(labels)), 10))
  result = metrics.averages(totals, seconds=2.0)
  logits = np.concatenate([b[0] for b in batches])
  labels = np.concatenate([b[1] for b in batches])
  expected = _numpy_sums(logits, labels, np.ones(21))
  assert result["count"] == 21 and result["images_per_sec"] == 10.5
  assert result["top1"] == expected["top1"] / 21 and result["top5"] == expected["top5"] / 21
  assert result["loss"] == pytest.approx(expected["loss"] / 21, rel=1e-5)


def test_empty_split_is_a_user_error():
  with pytest.raises(UserError, match="evaluation split is empty"):
    metrics.averages(None, 1.0)


def test_per_class_counts_and_hits_match_numpy():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(12, 3)).astype(np.float32)
  labels = np.array([0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 0, 0])  # class 2 has no example
  mask = np.ones(12, np.float32)
  mask[-2:] = 0.0
  sums = metrics.summed_metrics(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask), 3)
  result = metrics.averages(sums, seconds=1.0)
  kept = mask > 0
  hits = (logits.argmax(-1) == labels) & kept
  expected_counts = [int(((labels == c) & kept).sum()) for c in range(3)]
  assert result["class_count"] == expected_counts == [5, 5, 0]
  assert result["class_top1"][:2] == pytest.approx(
      [hits[labels == c].sum() / expected_counts[c] for c in range(2)])
  assert result["class_top1"][2] is None
