"""Every code block of README.md runs as written, in order, as a new user would paste them.

The Python blocks run in one namespace (they build on each other like notebook cells). The shell
blocks run through the command-line entry point in this process (a subprocess would pay the
imports and model loads again): the set-up block is what installed this environment, so it is
skipped and long jobs run with a smaller ``--limit`` (the only change made to a block). The
``localize`` line runs as written: the README gives it a first-look size."""

import re
import shlex
from pathlib import Path

import pytest

from workbench.cli.main import main

README = Path(__file__).resolve().parents[1] / "README.md"
SETUP_COMMANDS = ("python3 -m pip install", "python3 -m pytest")
TEST_LIMIT = "64"  # images per extraction in this test (the README's --limit is for a real look)


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def shell_commands() -> list[str]:
    commands = []
    for block in code_blocks("bash"):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line:
                commands.extend(part.strip() for part in line.split("&&"))
    return commands


def test_readme_has_the_blocks_this_test_runs():
    assert len(code_blocks("python")) >= 4
    commands = shell_commands()
    assert any(c.startswith("workbench extract") and "--limit" in c for c in commands), \
        "the README's extraction example should show --limit (the full job takes minutes)"
    assert not [c for c in commands if c.startswith("workbench") and not c.startswith(("workbench extract", "workbench probe",
                                                                                       "workbench demo", "workbench localize"))], \
        "a new shell command in the README: run it here or list why not"


@pytest.mark.slow
def test_readme_blocks_run_verbatim(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in code_blocks("python"):
        exec(compile(block, str(README), "exec"), namespace)
    assert Path("red-circle.zarr").exists()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        namespace["rec"].save("red-circle.zarr")

    ran = []
    for command in shell_commands():
        if command.startswith(SETUP_COMMANDS):
            continue
        argv = shlex.split(command)
        assert argv[0] == "workbench", command
        if "--limit" in argv:
            argv[argv.index("--limit") + 1] = TEST_LIMIT
        if argv[1] == "demo":
            continue  # part of the set-up command; tests/test_cli.py runs the demo on a small setting
        assert main(argv[1:]) == 0, command
        ran.append(argv[1])
    assert ran == ["extract", "probe", "localize"]
    assert Path("feats.zarr").exists() and Path("grid.html").exists()
    import xarray as xr

    grid = xr.open_zarr("sweep.zarr", group="grid")
    assert grid.sizes["pair"] == 2 and grid.sizes["variant"] > 0
    assert xr.open_zarr("sweep.zarr", group="focus").sizes["pair"] == 2
