"""Figures as PNG bytes, off-screen: what the reports write (atomically) beside a run."""

from __future__ import annotations

import io
from typing import Any


def new_axes(size: tuple[float, float] = (6, 4)) -> tuple[Any, Any]:
  """A matplotlib figure and axes on the Agg backend (no display needed)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt.subplots(figsize=size, dpi=120)


def finish_png(figure: Any, axes: Any, title: str, ylabel: str) -> bytes:
  """Titles the axes, adds the legend and returns the figure as PNG bytes (closed)."""
  import matplotlib.pyplot as plt
  axes.set_ylabel(ylabel)
  axes.set_title(title)
  axes.legend(fontsize=7)
  figure.tight_layout()
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png")
  plt.close(figure)
  return buffer.getvalue()
