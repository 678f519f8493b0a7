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
    "workbench.style": -1, "workbench.sitemap": -1,
    "workbench.schedulers": 0, "workbench.chain": 0, "workbench.data": 0, "workbench.attention": 0,
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


# -- the studies floor (docs/design.md, "Floors") ---------------------------------------------------
# What runs a model: the Model API a study calls, and the workbench modules that build or drive models.
# (``encode`` is left out: ``str.encode`` is everywhere; ``Model.encode`` has no use without ``predict``.)
MODEL_CALLS = {"generate", "predict", "denoiser", "pipe", "encode_images", "decode_latents", "add_noise",
               "token_offsets", "text_tokens", "site_map"}


def _analysis_modules() -> dict[str, Path]:
    return {name: path for name, path in _modules().items() if name.startswith("workbench.analysis")}


def test_analysis_never_runs_a_model():
    """``workbench.analysis`` is xarray in, xarray out: it imports no workbench module outside itself
    but the figure style (so no capture, model, builders or loading), takes no ``model`` argument and touches none of the
    Model API that runs or encodes (``.generate``, ``.predict``, ``.denoiser``, ...)."""
    known = set(_modules())
    wrong = []
    for name, path in _analysis_modules().items():
        for target in _imports(name, path, known):
            # workbench.style is plotly and pandas only (layer -1): the one look of every figure
            if not target.startswith("workbench.analysis") and target != "workbench.style":
                wrong.append(f"{path.relative_to(ROOT)} imports {target}")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if "model" in [a.arg for a in node.args.args + node.args.kwonlyargs + node.args.posonlyargs]:
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}() takes a model")
            if isinstance(node, ast.Attribute) and node.attr in MODEL_CALLS:
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} uses .{node.attr}")
    assert not wrong, "analysis/ must not run a model (studies/ does):\n" + "\n".join(wrong)


def _defined_functions(roots) -> dict[str, list[str]]:
    """Function name -> 'file:line' of every top-level function defined under ``roots``."""
    found: dict[str, list[str]] = {}
    for root in roots:
        for path in sorted((ROOT / root).rglob("*.py")):
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.FunctionDef):
                    found.setdefault(node.name, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


@pytest.mark.parametrize("helper, owner", [
    ("psnr", "workbench/analysis/metrics.py"),
    ("bootstrap", "workbench/analysis/stats.py"),
    ("results_dir", "workbench/results.py"),
    ("write_block", "workbench/studies/docs.py"),
    ("write_json_atomically", "workbench/store/jobs.py"),
])
def test_one_owner_per_study_helper(helper, owner):
    """One PSNR, one bootstrap, one results location, one doc-block writer: no second definition
    of any function named like them anywhere in the code, the benchmarks or the hooks."""
    places = [place for name, where in _defined_functions(("workbench", "benchmarks", "hooks")).items()
              if name in (helper, f"_{helper}") or name.startswith(f"{helper}_")
              for place in where]
    assert {p.split(":")[0] for p in places} == {owner}, f"{helper} is defined at {places}; its one owner is {owner}"


def test_benchmarks_are_scripts_that_import_no_sibling_and_patch_no_path():
    """Benchmarks time things; they import the installed package, never each other, and never
    touch ``sys.path`` (a study that needs shared code lives in ``workbench/studies/``)."""
    siblings = {path.stem for path in (ROOT / "benchmarks").glob("*.py")}
    wrong = []
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        source = path.read_text()
        if "sys.path" in source:
            wrong.append(f"{path.name} touches sys.path")
        for node in ast.walk(ast.parse(source)):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            wrong += [f"{path.name} imports {n}" for n in names if n.split(".")[0] in siblings]
            # a private helper module beside the scripts (the old _doc, _npz_cache) is a sibling too
            wrong += [f"{path.name} imports {n}, a helper beside the scripts" for n in names if n.startswith("_") and n != "__future__"]
    assert not wrong, "\n".join(wrong)


# The generated blocks a benchmark may write: the timing tables (docs/benchmarks.md), and the
# extraction timing that docs/features.md shows beside the feature store it times. A study's table
# (findings, skips, attention, ...) is written by that study's report.py.
TIMING_BLOCKS = {"benchmarks.md": None, "features.md": {"extraction"}}  # doc -> its keys a benchmark may write (None: any)


def test_benchmarks_time_things_and_write_only_timing_docs():
    """``benchmarks/`` keeps timings only: every ``write_block`` call there names, as a literal, a
    timing doc of ``TIMING_BLOCKS`` (so a study's rows written from a benchmark, as the old
    ``findings_figures.py`` and ``peers.py`` did, fail here)."""
    wrong = []
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "write_block"):
                continue
            doc, key = (node.args + [None, None])[:2]
            if not (isinstance(doc, ast.Constant) and doc.value in TIMING_BLOCKS):
                wrong.append(f"{path.name}:{node.lineno} writes into {ast.unparse(doc) if doc else '?'}")
            elif TIMING_BLOCKS[doc.value] is not None and not (isinstance(key, ast.Constant)
                                                               and key.value in TIMING_BLOCKS[doc.value]):
                wrong.append(f"{path.name}:{node.lineno} writes block {ast.unparse(key) if key else '?'} of {doc.value}")
    assert not wrong, "benchmarks writing doc blocks that are not timings:\n" + "\n".join(wrong)


def test_cli_is_thin():
    """The command line parses arguments and calls a job; it holds no job (no ``StoreJob``, no claims)
    and no module of it grows past 200 lines."""
    known = set(_modules())
    wrong = []
    for name, path in _modules().items():
        if not name.startswith("workbench.cli"):
            continue
        lines = len(path.read_text().splitlines())
        if lines > 200:
            wrong.append(f"{path.relative_to(ROOT)} has {lines} lines")
        wrong += [f"{path.relative_to(ROOT)} imports {t}" for t in _imports(name, path, known)
                  if t == "workbench.store.claims"]
        if "StoreJob" in path.read_text():
            wrong.append(f"{path.relative_to(ROOT)} runs a StoreJob itself")
    assert not wrong, "\n".join(wrong)


def test_every_study_has_a_report_that_updates_its_doc():
    """Each study folder has ``report.py`` whose command line is the shared one (``studies.docs.report_main``:
    print, or ``--update-doc``) over its ``blocks()``, and doc blocks are written from report modules only."""
    studies = [p for p in (ROOT / "workbench" / "studies").iterdir() if (p / "__init__.py").exists()]
    assert len(studies) >= 5
    missing = [p.name for p in studies
               if not (p / "report.py").exists() or "report_main(blocks" not in (p / "report.py").read_text()]
    assert not missing, f"studies without a report.py that runs report_main(blocks, ...) (--update-doc): {missing}"
    writers = [str(path.relative_to(ROOT)) for path in (ROOT / "workbench").rglob("*.py")
               if "write_block(" in path.read_text() and path.name not in ("report.py", "docs.py")]
    assert not writers, f"doc blocks written outside a study's report.py: {writers}"


# The studies whose job runs a model over many items: each resumes through the store machinery
# (``StoreJob`` directly, ``ItemStore``, or ``studies.cache.Cache`` on top of it).
RESUMABLE_STUDIES = ("attention", "localization", "quality", "skips", "svd")


def test_every_study_has_a_protocol_a_job_and_a_report():
    """Each study folder has ``protocol.py`` (pairs, splits, selection on validation, baselines),
    ``job.py`` (what runs the model and writes results) and ``report.py``; the jobs that run a model
    over many items resume through the store machinery."""
    studies = [p for p in (ROOT / "workbench" / "studies").iterdir() if (p / "__init__.py").exists()]
    missing = [f"{p.name}/{part}" for p in studies for part in ("protocol.py", "job.py", "report.py")
               if not (p / part).exists()]
    assert not missing, f"study folders without their protocol, job or report: {missing}"
    machinery = ("StoreJob", "ItemStore", "Cache(")
    plain = [name for name in RESUMABLE_STUDIES
             if not any(word in (ROOT / "workbench" / "studies" / name / "job.py").read_text() for word in machinery)]
    assert not plain, f"study jobs that do not resume through workbench.store: {plain}"


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
