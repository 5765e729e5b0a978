"""The package's shape, read from the source (nothing imported): no import cycles, no module imports a CLI
module, and every import goes to the same or a lower layer. ``pytest tests/test_architecture.py`` checks
it; ``python3 ../shared/tools/import_graph.py . rlprompt=rlprompt rlprompt.envs=envs
rlprompt.policies=policies`` lists cycles too. Imports inside functions count: a lazy import still ties two
modules."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "rlprompt": ROOT / "rlprompt",
    "rlprompt.envs": ROOT / "envs",
    "rlprompt.policies": ROOT / "policies",
}

# Lowest first. A module may import its own layer and the layers below; the longest matching prefix wins.
# fmt: off
LAYERS = [
    ("foundation", ["rlprompt.version", "rlprompt.errors", "rlprompt.files", "rlprompt.compat",
                    "rlprompt.console", "rlprompt.tables", "rlprompt.registry", "rlprompt.metrics",
                    "rlprompt.settings"]),
    ("models and data", ["rlprompt.models", "rlprompt.templates", "rlprompt.tasks", "rlprompt.vocab",
                         "rlprompt.perplexity", "rlprompt.checkpoint", "rlprompt.scoring",
                         "rlprompt.backends", "rlprompt.calibration", "rlprompt.style.data",
                         "rlprompt.style.encoder",
                         "rlprompt.style.rewriter", "rlprompt.style.reward"]),
    ("scoring and artifacts", ["rlprompt.evaluation", "rlprompt.export", "rlprompt.envs", "rlprompt.policies",
                               "rlprompt.sql"]),
    ("method contract", ["rlprompt.methods.base"]),
    ("task kinds", ["rlprompt.kinds", "rlprompt.style"]),
    ("methods", ["rlprompt.methods"]),
    # The config schema is assembled from the methods' own settings classes (rlprompt.registry).
    ("orchestration", ["rlprompt.config", "rlprompt.runs", "rlprompt.executors", "rlprompt.plan",
                       "rlprompt.comparison", "rlprompt.driver", "rlprompt.api"]),
    ("command lines", ["rlprompt.train", "rlprompt.evaluate", "rlprompt.transfer", "rlprompt.rewrite",
                       "rlprompt.report", "rlprompt.cli", "rlprompt.__main__"]),
]
# fmt: on
TOP = "rlprompt"  # the package's own __init__ (lazy shortcuts to the API): above everything
CLI_MODULES = {
    "rlprompt.train",
    "rlprompt.evaluate",
    "rlprompt.transfer",
    "rlprompt.rewrite",
    "rlprompt.report",
}
DISPATCHERS = {"rlprompt.cli", "rlprompt.__main__"}  # `rlprompt <command>` hands over to the CLI modules


def _modules() -> dict[str, Path]:
    found = {}
    for package, directory in PACKAGES.items():
        for file in directory.rglob("*.py"):
            parts = [p for p in file.relative_to(directory).with_suffix("").parts if p != "__init__"]
            found[".".join([package, *parts])] = file
    return found


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, file in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            targets |= {t for t in map(resolve, names) if t is not None and t != module}
        graph[module] = targets
    return graph


def _layer(module: str) -> int:
    if module == TOP:
        return len(LAYERS)
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best


def test_every_import_goes_down_or_sideways():
    graph = _imports(_modules())
    names = [name for name, _ in LAYERS] + ["package"]
    upward = [f"{m} ({names[_layer(m)]}) imports {t} ({names[_layer(t)]})"
              for m, targets in graph.items() for t in targets if _layer(t) > _layer(m)]  # fmt: skip
    assert not upward, "\n".join(upward)


def test_no_module_imports_a_command_line_module():
    graph = _imports(_modules())
    offenders = [f"{m} imports {t}" for m, targets in graph.items() if m not in DISPATCHERS
                 for t in targets & CLI_MODULES]  # fmt: skip
    assert not offenders, "\n".join(offenders)


def test_no_import_cycles():
    graph = _imports(_modules())
    # Tarjan's strongly connected components: any with two or more modules is a cycle.
    index, low, on_stack, stack, cycles, counter = {}, {}, set(), [], [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_the_checks_see_the_whole_package():
    """The checks read every module (a typo in PACKAGES would make them pass vacuously)."""
    graph = _imports(_modules())
    assert {"rlprompt.driver", "rlprompt.methods.rl", "rlprompt.kinds.style", "rlprompt.envs.prompt_env",
            "rlprompt.policies.token_policy"} <= set(graph)  # fmt: skip
    assert (
        "rlprompt.kinds" in graph["rlprompt.methods.rl"] and "rlprompt.comparison" in graph["rlprompt.driver"]
    )
    # ... and would see an upward import: the driver importing a CLI module, say.
    assert _layer("rlprompt.train") > _layer("rlprompt.driver") > _layer("rlprompt.methods.rl")
