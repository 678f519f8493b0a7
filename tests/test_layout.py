"""The package's structure, checked from its source: who may import whom, no import cycles, no
model family named outside ``hooks/`` and the model builders, data found through the package, and a
wheel that works outside the repository (docs/design.md, "Layers")."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import workbench.hooks as hooks
from workbench.features.config import ExtractConfig, load_config

ROOT = Path(__file__).resolve().parents[1]

# Who may import whom: a module may import its own subpackage and anything on a LOWER layer.
# ``workbench`` itself is the public facade (it re-exports capture, loading, model, store).
LAYERS = {
    "workbench.sitemap": 0, "workbench.schedulers": 0, "workbench.data": 0, "workbench.attention": 0,
    "workbench.store": 0, "workbench.report": 0,
    "workbench.hooks": 1,
    "workbench.model": 2,
    "workbench.models": 3, "workbench.inversion": 3,
    "workbench.loading": 4, "workbench.scoring": 4,
    "workbench.capture": 5,
    "workbench": 6,
    "workbench.analysis": 7, "workbench.features": 7, "workbench.widgets": 7, "workbench.results": 7,
    "workbench.demo": 8, "workbench.studies": 8,
    "workbench.cli": 9,
}


def _modules() -> dict[str, Path]:
    """Module name -> file, for workbench/ and hooks/ (installed as workbench.hooks)."""
    found = {}
    for folder, package in ((ROOT / "workbench", "workbench"), (ROOT / "hooks", "workbench.hooks")):
        for path in folder.rglob("*.py"):
            if "datasets" in path.relative_to(folder).parts:
                continue
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Workbench modules ``name`` imports, at any depth in the file (function-level imports count)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            candidates = [f"{module}.{alias.name}" for alias in node.names] + [module]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        for candidate in candidates:
            if candidate in known:
                targets.add(candidate)
                break
    return targets - {name}


def _layer(module: str) -> tuple[str, int]:
    for depth in (2, 1):
        head = ".".join(module.split(".")[:depth])
        if head in LAYERS:
            return head, LAYERS[head]
    raise KeyError(f"{module} is on no layer: add its package to LAYERS (and to docs/design.md)")


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def test_imports_only_run_down_the_layers():
    wrong = []
    for module, targets in _graph().items():
        group, level = _layer(module)
        for target in targets:
            target_group, target_level = _layer(target)
            if target_group != group and target_level >= level:
                wrong.append(f"{module} (layer {level}) imports {target} (layer {target_level})")
    assert not wrong, "imports that run up or across the layers:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def _family_words() -> set[str]:
    words = {m.family for m in hooks.SITE_MAPS}
    words |= {c for m in hooks.SITE_MAPS for c in m.model_classes}
    words |= {c for p in hooks.PIPELINES for c in p.pipeline_classes}
    return words


def _code_strings(tree: ast.AST) -> list[ast.Constant]:
    """String constants that are not docstrings."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docstrings]


def test_no_model_family_is_named_outside_hooks_and_the_builders():
    """Architecture facts live in hooks/, pipeline facts in Model: nothing else compares a family
    name, names a diffusers model or pipeline class, or reads ``.family`` to decide."""
    words = _family_words()
    builders = ("workbench.hooks", "workbench.models")  # the site maps, and the code that builds models
    offenders = []
    for name, path in _modules().items():
        if name.startswith(builders):
            continue
        tree = ast.parse(path.read_text())
        for const in _code_strings(tree):
            if const.value in words:
                offenders.append(f"{path.relative_to(ROOT)}:{const.lineno} names {const.value!r}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and any(
                isinstance(side, ast.Attribute) and side.attr == "family" for side in [node.left, *node.comparators]
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} branches on .family")
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance":
                names = ast.unparse(node.args[1]) if len(node.args) > 1 else ""
                if any(word in names for word in words):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} isinstance of {names}")
    assert not offenders, "model knowledge outside hooks/ and workbench/models:\n" + "\n".join(offenders)


def test_every_site_map_declares_its_facts():
    """Each family file gives what analysis asks for; an empty field must mean 'has none'."""
    for site_map in hooks.SITE_MAPS:
        assert site_map.stages, site_map.family
        assert bool(site_map.text_keys) == bool(site_map.text_values) == bool(site_map.text_attention) or \
            not site_map.text_attention, site_map.family
    assert hooks.supported_classes() == sorted({c for m in hooks.SITE_MAPS for c in m.model_classes})


@pytest.mark.parametrize("spec", sorted((ROOT / "datasets" / "examples").glob("*.toml")), ids=lambda p: p.stem)
def test_example_job_specs_parse(spec):
    config = load_config(spec)
    assert isinstance(ExtractConfig(**config), ExtractConfig)


def test_shipped_data_is_found_through_the_package():
    import importlib.resources

    packaged = importlib.resources.files("workbench") / "datasets"
    assert (packaged / "shapes.toml").is_file()
    recipe = tomllib.loads((packaged / "shapes.toml").read_text())
    assert recipe["name"] == "shapes"
    assert not (ROOT / "datasets" / "__init__.py").exists(), "datasets/ must stay a data folder (no shadowing)"


@pytest.mark.slow
def test_wheel_works_outside_the_repository(tmp_path):
    """Build the wheel, install it into a fresh virtual environment (dependencies from this one),
    and run the demo and one recording from a directory outside the checkout."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(ROOT)], check=True, capture_output=True)
    wheel = next(dist.glob("workbench-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", str(wheel)], check=True,
                   capture_output=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    script = (
        "import workbench as wb, pathlib, sys\n"
        f"assert pathlib.Path(wb.__file__).is_relative_to({str(venv)!r}), wb.__file__\n"
        "m = wb.load('toy-unet')\n"
        "with wb.record(m, ['**.attn2.probs', 'latent.x0']) as rec:\n"
        "    m.generate(['a red circle on the left'], steps=2)\n"
        "assert rec['latent.x0'].sizes['step'] == 2\n"
        "print('recorded', len(rec))\n"
    )
    run = subprocess.run([str(python), "-c", script], cwd=outside, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    demo = subprocess.run([str(venv / "bin" / "workbench"), "demo", "--out", "out", "--models", "toy-unet",
                           "--steps", "2", "--prompt", "a red circle on the left"],
                          cwd=outside, env=env, capture_output=True, text=True)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert (outside / "out" / "report.html").is_file()
