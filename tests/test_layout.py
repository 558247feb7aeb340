"""The package's layout: its sub-packages depend on each other one way (README, Layout)."""

import ast
import os

from helpers import ROOT

PACKAGE = os.path.join(ROOT, "effnetlite")


def _part(top: str, *rest: str) -> str:
  return f"utils.{rest[0].removesuffix('.py')}" if top == "utils" and rest else top


def _dependencies() -> dict[str, set[str]]:
  """For each part of effnetlite (a sub-package, a top-level module, or a module of the
  `utils` toolbox, whose modules serve different layers), the other parts its modules
  import, at module level or inside functions."""
  graph: dict[str, set[str]] = {}
  for folder, _, files in os.walk(PACKAGE):
    for name in (f for f in files if f.endswith(".py")):
      path = os.path.join(folder, name)
      relative = os.path.relpath(path, PACKAGE).split(os.sep)
      part = _part(relative[0].removesuffix(".py"), *relative[1:])
      if part.endswith("__init__"):
        continue
      edges = graph.setdefault(part, set())
      for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        targets = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
          targets = ([f"{node.module}.{a.name}" for a in node.names]
                     if node.module in ("effnetlite", "effnetlite.utils") else [node.module])
        elif isinstance(node, ast.Import):
          targets = [a.name for a in node.names]
        for target in targets:
          words = target.split(".")
          if words[0] == "effnetlite" and len(words) > 1:
            target_part = _part(words[1], *words[2:3])
            if target_part != part and target_part != "utils":
              edges.add(target_part)
  return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
  state: dict[str, int] = {}

  def visit(node: str, path: list[str]) -> list[str]:
    state[node] = 1
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return path + [node, nxt]
      if nxt not in state and (found := visit(nxt, path + [node])):
        return found
    state[node] = 2
    return []
  for node in sorted(graph):
    if node not in state and (found := visit(node, [])):
      return found
  return []


def test_parts_of_the_package_import_each_other_without_cycles():
  graph = _dependencies()
  assert {"nn", "quant", "weights", "train", "export", "search"} <= set(graph)
  assert not _cycle(graph), " -> ".join(_cycle(graph))


def test_the_readme_order_holds():
  """`nn` <- `quant` <- `weights` <- `train`, `evaluation`, `export` <- `search`: the model
  knows nothing of optimizers, export nothing of training."""
  graph = _dependencies()
  assert not graph["nn"] & {"quant", "weights", "train", "evaluation", "export", "search"}
  assert not graph["quant"] & {"weights", "train", "evaluation", "export", "search"}
  assert not graph["weights"] & {"train", "evaluation", "export", "search"}
  assert not graph["export"] & {"train", "search"}
  assert not graph["train"] & {"export", "search"}
