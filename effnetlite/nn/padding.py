"""TensorFlow's 'SAME' padding geometry, which the exported graphs and the TF weights assume."""

from __future__ import annotations


def same_output_size(size: int, stride: int) -> int:
  """TF 'SAME' output size: ceil(size / stride)."""
  return -(-size // stride)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TF 'SAME' padding: the odd extra pixel goes after (bottom/right)."""
  total = max((same_output_size(size, stride) - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2
