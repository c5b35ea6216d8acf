"""The package's import structure: no module imports another that (directly or through
others) imports it back, at module level or inside a function. A circle is how a second
copy of shared logic creeps in (issue 29: loop.py and speculative.py imported each other)."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "o1jax"


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
  """module -> o1jax modules it imports anywhere in its body (package __init__ files, which
  only re-export, are left out as targets and sources)."""
  modules = {_module_name(p): p for p in ROOT.rglob("*.py") if p.name != "__init__.py"}
  graph = {}
  for name, path in modules.items():
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("o1jax"):
        for alias in node.names:
          full = f"{node.module}.{alias.name}"
          deps.add(full if full in modules else node.module)
      elif isinstance(node, ast.Import):
        deps.update(a.name for a in node.names if a.name.startswith("o1jax"))
    graph[name] = {d for d in deps if d in modules and d != name}
  return graph


def find_cycle(graph):
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for dep in sorted(graph.get(node, ())):
      if state.get(dep) == "open":
        return stack[stack.index(dep):] + [dep]
      if dep not in state:
        found = visit(dep)
        if found:
          return found
    state[node] = "done"
    stack.pop()
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def test_find_cycle_finds_a_circle():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_module_imports_itself_back():
  assert find_cycle(import_graph()) is None


def test_both_loops_sit_on_the_controller():
  graph = import_graph()
  assert "o1jax.thinking.controller" in graph["o1jax.thinking.loop"]
  assert "o1jax.thinking.controller" in graph["o1jax.thinking.speculative"]
  assert "o1jax.thinking.loop" not in graph["o1jax.thinking.speculative"]
