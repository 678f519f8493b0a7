"""The command line: the demo end to end (small), sites, generate with a recording, errors."""

import shutil
import subprocess
import sys
from pathlib import Path


import workbench as wb
from workbench.cli.main import main


def test_demo_runs_end_to_end_on_a_small_setting(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "3", "--prompt", "a red circle on the left",
                 "--prompt", 'the letter "K" in yellow on the right']) == 0
    report = (out / "report.html").read_text()
    assert "toy-mmdit" in report and "toy-unet" in report and "plotly" in report.lower()
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "toy-mmdit-0.png", "toy-mmdit-1.png", "toy-unet-0.png", "toy-unet-1.png"]
    recorded = wb.open_recording(out / "toy-unet.zarr")
    assert any(".skip." in name for name in recorded) and "latent.x0" in recorded
    probs = wb.open_recording(out / "toy-mmdit.zarr")["transformer_blocks.0.attn.probs.image->text"]
    assert probs.sizes["sample"] == 2 and probs.sizes["step"] == 3
    row_mass = probs.sum("key").values  # one block of the joint matrix: each row sends part of its mass to text
    assert (row_mass > 0).all() and (row_mass <= 1 + 1e-5).all()


def test_sites_lists_and_errors_name_the_nearest(capsys):
    assert main(["sites", "toy-mmdit", "transformer_blocks.0.attn.probs*"]) == 0
    out = capsys.readouterr().out
    assert "transformer_blocks.0.attn.probs.image->text" in out and "5 sites" in out
    assert main(["sites", "toy-mmdit", "transformer_blocks.0.atn.probs"]) == 2
    assert "nearest valid sites: transformer_blocks.0.attn.probs" in capsys.readouterr().err


def test_generate_writes_images_and_a_recording(tmp_path):
    assert main(["generate", "toy-unet", "a blue square at the top", "--steps", "2", "--out", str(tmp_path),
                 "--record", "latent.x0"]) == 0
    assert (tmp_path / "000.png").exists()
    assert wb.open_recording(tmp_path / "recording.zarr")["latent.x0"].sizes["step"] == 2


def test_console_script_is_installed():
    """The ``workbench`` command that pyproject's [project.scripts] installs, not ``python -m``."""
    script = shutil.which("workbench") or str(Path(sys.executable).parent / "workbench")
    assert Path(script).exists(), "the workbench console script is not installed (pip install -e .)"
    result = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "extract" in result.stdout
