"""The package's import graph, read from the source (every import, those inside functions too):
no import circle, the plugin never imports the tools, and the library takes its user error from
``files``, not from the command-line module. Nothing is imported, so this needs no fairseq."""
import ast
import os

PACKAGE = "td_fairseq"
ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), PACKAGE)


def module_files():
    """{dotted module name: path} of every .py file under the package."""
    modules = {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, os.path.dirname(ROOT))[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts.pop()
                modules[".".join(parts)] = path
    return modules


def imported_modules(module: str, path: str, known) -> set:
    """The package's modules that ``module`` imports anywhere in its file. ``from X import name``
    counts as importing X.name when that is a module, else X."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    is_package = os.path.basename(path) == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: level 1 is this module's package
                base = module.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            submodules = {f"{target}.{alias.name}" for alias in node.names} & known
            found.update(submodules or {target})
    return {name for name in found if name in known and name != module}


def import_graph() -> dict:
    modules = module_files()
    return {module: imported_modules(module, path, modules.keys()) for module, path in modules.items()}


def find_cycle(graph: dict):
    """One import circle of ``graph`` as a list [a, b, ..., a], or None."""
    done, path, on_path = set(), [], set()

    def visit(node):
        path.append(node)
        on_path.add(node)
        for child in sorted(graph.get(node, ())):
            if child in on_path:
                return path[path.index(child):] + [child]
            if child not in done:
                cycle = visit(child)
                if cycle:
                    return cycle
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    for node in sorted(graph):
        if node not in done:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_cycle_finder_finds_a_circle_and_only_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_graph_sees_relative_absolute_and_function_level_imports():
    graph = import_graph()
    assert "td_fairseq.tools.loading" in graph["td_fairseq.tools.checkpoint"]
    assert "td_fairseq.transformer_archs" in graph["td_fairseq.models.transformer_td"]
    assert "td_fairseq.sparsity" in graph["td_fairseq.vision.training_state"]
    assert "td_fairseq.models" in graph["td_fairseq.tools.loading"]  # `import td_fairseq.models` in a function
    assert "td_fairseq.tools.loading" in graph["td_fairseq.inference"]  # inside a function too


def test_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_plugin_never_imports_the_tools():
    graph = import_graph()
    wrong = {module: sorted(name for name in imports if name.startswith("td_fairseq.tools"))
             for module, imports in graph.items() if module.startswith("td_fairseq.models")}
    assert not any(wrong.values()), wrong


def test_library_takes_user_error_from_files_not_cli():
    graph = import_graph()
    wrong = sorted(module for module, imports in graph.items() if "td_fairseq.cli" in imports)
    assert wrong == [], wrong
