"""The widget notebook in a real browser: JupyterLab on loopback, headless Chromium driven by
Playwright, all cells run from the Run menu, a slider moved, the figure seen to change.

This is the one test that proves the widgets render where users see them (the front-end
extensions of ipywidgets, anywidget and plotly load, the kernel's messages reach the page),
which no Python-side test can. It needs Debian's ``chromium`` and the ``playwright`` package
(``.ci/install_browser`` installs both) and skips with the reason when either is missing.

Also here: notebook 04's picker and notebook 05's probe figures after Run All, the explorer's
frame slider on a tiny video model, and the probe figures' layout measured on the drawn page
(labels and titles that do not collide).

Set ``WORKBENCH_UPDATE_SCREENSHOT=1`` to copy the screenshot to ``docs/img/widget.png``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "02_widgets.ipynb"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync"]
# JupyterLab settings that keep the page quiet and offline: no news or update checks (and so no
# toast asking about them covering the notebook).
LAB_SETTINGS = {"@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                                      "checkForUpdates": False},
                # Render every cell: JupyterLab 4 otherwise drops cells scrolled out of view from the
                # page, and a widget output above the last cell could not be found after Run All.
                "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"}}


def _requirements() -> str | None:
    """Why the test cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (run .ci/install_browser)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (run .ci/install_browser)"
    try:
        import anywidget  # noqa: F401
    except ImportError:
        return "anywidget is missing (plotly's FigureWidget needs it)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_lab(root: Path, port: int, token: str) -> subprocess.Popen:
    """JupyterLab serving ``root`` on loopback, with its config, runtime files, settings and
    workspaces all inside ``root`` so nothing a user has set (or another run left) leaks in."""
    home = root / ".jupyter"
    settings = home / "lab" / "user-settings"
    for name, values in LAB_SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
           "IPYTHONDIR": str(home / "ipython"), "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable, "-m", "jupyterlab",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False", f"--ServerApp.root_dir={root}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.news_url=None",
        "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False",
    ]
    if os.geteuid() == 0:  # CI containers run as root; the server refuses that unless told
        command.append("--allow-root")
    log = open(root / "jupyterlab.log", "w")
    # A session of its own, so the whole group (server and the kernels it starts) can be ended
    # together by this process's id.
    return subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for_lab(proc: subprocess.Popen, port: int, token: str, root: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/api/status?token={token}"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited ({proc.returncode}):\n{(root / 'jupyterlab.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(f"JupyterLab did not answer within {timeout} s:\n{(root / 'jupyterlab.log').read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)  # the group led by the server this test started
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


# The explorer's widget output and its step slider; ipywidgets 8 renders sliders with noUiSlider.
EXPLORER = ".jp-OutputArea-output:has(.js-plotly-plot):has(.widget-label:text-is('word B'))"
STEP_SLIDER = ".widget-slider:has(.widget-label:text-is('step'))"
# Plotly draws a heatmap as an SVG <image> whose href is a PNG of the cells: it changes iff the
# drawn values do.
HEATMAPS_JS = """el => Array.from(el.querySelectorAll('.js-plotly-plot .heatmaplayer image'))
                          .map(img => img.getAttribute('href') || img.getAttribute('xlink:href'))"""


IMAGES_JS = """el => Array.from(el.querySelectorAll('.js-plotly-plot .imagelayer image'))
                        .map(img => img.getAttribute('href') || img.getAttribute('xlink:href'))"""


def _move_slider(output, slider: str, drawn_js: str, timeout: float = 20) -> tuple[list, list]:
    """Press the right arrow on a slider's handle (one step on, as a keyboard user would) and
    wait for what ``drawn_js`` reads from the output to change; returns it before and after."""
    before = output.evaluate(drawn_js)
    assert before, "nothing drawn before the slider moved"
    readout = output.locator(slider + " .widget-readout")
    readout_before = readout.inner_text()
    handle = output.locator(slider + " .noUi-handle").first
    handle.focus()
    handle.press("ArrowRight")  # the slider sends its new value to the kernel, which redraws
    deadline, after = time.monotonic() + timeout, before
    while after == before and time.monotonic() < deadline:
        output.page.wait_for_timeout(200)
        after = output.evaluate(drawn_js)
    assert readout.inner_text() != readout_before, "the slider did not move"
    return before, after


@contextlib.contextmanager
def _notebook_in_chromium(root: Path, notebook: str):
    """JupyterLab serving ``root`` and headless chromium on ``notebook`` with every cell run (Run
    menu -> Run All Cells, as a user would): yields ``(page, errors)``. On failure the page is
    saved as ``failure.png``; the browser and the server always stop."""
    from playwright.sync_api import sync_playwright

    port, token = _free_port(), secrets.token_hex(16)
    lab = _start_lab(root, port, token)
    playwright = browser = page = None
    try:
        _wait_for_lab(lab, port, token, root)
        playwright = sync_playwright().start()
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"http://127.0.0.1:{port}/lab/tree/{notebook}?reset&token={token}")
        page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=30_000)
        # The kernel is ready once the status bar reads "Python 3 (ipykernel) | Idle" (the toolbar's
        # indicator says idle before a kernel even exists, and cells run then are dropped).
        page.get_by_text(re.compile(r"\(ipykernel\) \| Idle")).first.wait_for(timeout=30_000)
        page.locator(".lm-MenuBar-item", has_text="Run").first.click()
        page.locator(".lm-Menu-item:visible", has_text="Run All Cells").first.click()
        yield page, errors
    except Exception:
        if page is not None:  # what the page showed when it went wrong, for whoever reads the failure
            page.screenshot(path=str(root / "failure.png"))
            print(f"page at failure: {root / 'failure.png'}; server log: {root / 'jupyterlab.log'}")
        raise
    finally:
        if browser is not None:
            browser.close()
        if playwright is not None:
            playwright.stop()
        _stop(lab)


def test_widget_notebook_in_chromium(tmp_path):
    reason = _requirements()
    if reason:
        pytest.skip(reason)
    started = time.monotonic()
    shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)
    screenshot = tmp_path / "widget.png"
    with _notebook_in_chromium(tmp_path, NOTEBOOK.name) as (page, errors):
        page.locator(".jp-CodeCell .jp-InputPrompt", has_text="[1]:").first.wait_for(timeout=20_000)

        explorer = page.locator(EXPLORER).first
        explorer.locator(".heatmaplayer image").first.wait_for(timeout=45_000)
        viewer = page.locator(".jp-OutputArea-output:has(.js-plotly-plot):has(.widget-label:text-is('sample'))").first
        viewer.locator(".imagelayer image").first.wait_for(timeout=20_000)  # the trajectory viewer, last cell
        outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
        assert not any("Traceback" in text or "Error displaying widget" in text for text in outputs), outputs

        before, after = _move_slider(explorer, STEP_SLIDER, HEATMAPS_JS)
        assert after != before, "moving the step slider did not redraw the attention maps"
        before, after = _move_slider(viewer, STEP_SLIDER, IMAGES_JS)
        assert after != before, "moving the trajectory's step slider did not show another decoded image"

        explorer.scroll_into_view_if_needed()
        page.wait_for_timeout(300)  # let plotly finish its transition before the picture
        explorer.screenshot(path=str(screenshot))
        viewer.scroll_into_view_if_needed()
        viewer.screenshot(path=str(tmp_path / "trajectory.png"))
        assert not [e for e in errors if "plotly" in e.lower() or "widget" in e.lower()], errors
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("WORKBENCH_UPDATE_SCREENSHOT") == "1":
        target = REPO / "docs" / "img" / "widget.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, target)
    assert time.monotonic() - started < 60, "the browser test should take under a minute"


# The singular-value explorer (workbench.widgets.svd): its output area and its first gain slider.
SVD_EXPLORER = ".jp-OutputArea-output:has(.js-plotly-plot):has(.widget-label:text-is('gain s1'))"
GAIN_SLIDER = ".widget-slider:has(.widget-label:text-is('gain s1'))"
def _wait_for_run_all(page, seconds: float = 300) -> None:
    """Wait until every code cell shows an execution count (Run All has finished), then check
    that no output is a traceback."""
    prompts = page.locator(".jp-CodeCell .jp-InputPrompt")
    deadline = time.monotonic() + seconds

    def finished() -> bool:
        texts = prompts.all_inner_texts()
        return bool(texts) and all(re.search(r"\[\d+\]", t) for t in texts)

    while not finished() and time.monotonic() < deadline:
        page.wait_for_timeout(1000)
    assert finished(), "Run All did not finish"
    outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
    assert not any("Traceback" in text for text in outputs), [t for t in outputs if "Traceback" in t]


def _one_cell_notebook(path: Path, source: str) -> None:
    """Write a notebook of one code cell, for the python3 kernel, to ``path``."""
    import nbformat

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(notebook, path)


SVD_CELL = """import workbench as wb
from workbench.studies.svd.runs import EditSession
from workbench.widgets.svd import SVDExplorer
SVDExplorer(EditSession(wb.load("toy-mmdit"), "a red circle on the left", steps=6), step=2, values=3)"""


def test_svd_explorer_in_chromium(tmp_path):
    """Move the first singular-value gain slider: the x0 estimate and the final image redraw."""
    reason = _requirements()
    if reason:
        pytest.skip(reason)
    _one_cell_notebook(tmp_path / "svd_explorer.ipynb", SVD_CELL)
    with _notebook_in_chromium(tmp_path, "svd_explorer.ipynb") as (page, errors):
        explorer = page.locator(SVD_EXPLORER).first
        explorer.locator(".imagelayer image").first.wait_for(timeout=60_000)
        before, after = _move_slider(explorer, GAIN_SLIDER, IMAGES_JS, timeout=30)
        assert after != before, "moving the singular-value slider did not redraw the images"
        assert len(after) == 2 and all(a != b for a, b in zip(after, before)), "both x0 and the final image change"
        explorer.screenshot(path=str(tmp_path / "svd_explorer.png"))


# Notebook 04's variant picker: its widget output, found by its "pair" dropdown.
PICKER = ".jp-OutputArea-output:has(.js-plotly-plot):has(.widget-label:text-is('pair'))"
LOCALIZATION_NOTEBOOK = REPO / "notebooks" / "04_text_localization.ipynb"


def _dropdown(output, label: str):
    return output.locator(f".widget-dropdown:has(.widget-label:text-is('{label}')) select").first


@pytest.mark.slow
def test_localization_picker_after_run_all(tmp_path):
    """Run All of notebook 04, then use its picker: a cell after the picker once rebound a global
    its callback read, so after Run All every choice said "not in the live sweep" and the images
    never changed. Waits for the last cell to finish, picks another pair and another layer."""
    reason = _requirements()
    if reason:
        pytest.skip(reason)
    shutil.copy(LOCALIZATION_NOTEBOOK, tmp_path / LOCALIZATION_NOTEBOOK.name)
    with _notebook_in_chromium(tmp_path, LOCALIZATION_NOTEBOOK.name) as (page, errors):
        _wait_for_run_all(page)  # every cell has run, the ones after the picker included
        picker = page.locator(PICKER).first
        picker.scroll_into_view_if_needed()
        picker.locator(".imagelayer image").first.wait_for(timeout=30_000)
        heads_shown = _dropdown(picker, "heads").evaluate("s => s.options[s.selectedIndex].text")
        assert heads_shown.replace("\xa0", " ") == "all heads", heads_shown  # ipywidgets renders spaces as nbsp

        for label, choice in (("pair", 1), ("layer", 0)):
            before = picker.evaluate(IMAGES_JS)
            _dropdown(picker, label).select_option(index=choice)
            deadline, after = time.monotonic() + 30, before
            while after == before and time.monotonic() < deadline:
                page.wait_for_timeout(200)
                after = picker.evaluate(IMAGES_JS)
            note = picker.locator(".widget-html").first.inner_text()
            assert "not in the live sweep" not in note, note
            assert after != before, f"choosing another {label} did not change the images"
        picker.screenshot(path=str(tmp_path / "picker.png"))
        assert not [e for e in errors if "plotly" in e.lower() or "widget" in e.lower()], errors
    if os.environ.get("WORKBENCH_UPDATE_SCREENSHOT") == "1":
        shutil.copy(tmp_path / "picker.png", REPO / "docs" / "img" / "notebook04_picker.png")


# The explorer on a tiny video model: its frame slider picks which latent frame's map is drawn.
FRAME_SLIDER = ".widget-slider:has(.widget-label:text-is('frame'))"
VIDEO_EXPLORER_CELL = """import workbench as wb
from workbench import widgets
from workbench.models.video import tiny_video_model, video_latents

wan = tiny_video_model("wan")
prompt = ["a red circle on the left"]
with wb.record(wan, ["blocks.*.attn2.probs"]) as rec:
    wb.denoise(wan, video_latents(wan), steps=2, conditioning=wan.encode(prompt), prompts=prompt)
widgets.attention(rec)"""


def test_video_explorer_frame_slider_in_chromium(tmp_path):
    """Move the explorer's frame slider on a tiny Wan recording: the word map redraws (another
    frame's map) and the status line names the new frame."""
    reason = _requirements()
    if reason:
        pytest.skip(reason)
    _one_cell_notebook(tmp_path / "video_explorer.ipynb", VIDEO_EXPLORER_CELL)
    with _notebook_in_chromium(tmp_path, "video_explorer.ipynb") as (page, errors):
        explorer = page.locator(f".jp-OutputArea-output:has(.js-plotly-plot):has({FRAME_SLIDER})").first
        explorer.locator(".heatmaplayer image").first.wait_for(timeout=60_000)
        assert "frame 0 of 3" in explorer.inner_text()
        before, after = _move_slider(explorer, FRAME_SLIDER, HEATMAPS_JS, timeout=30)
        assert after != before, "moving the frame slider did not redraw the word map"
        assert "frame 1 of 3" in explorer.inner_text()
        explorer.screenshot(path=str(tmp_path / "video_explorer.png"))
        assert not [e for e in errors if "plotly" in e.lower() or "widget" in e.lower()], errors


PROBING_NOTEBOOK = REPO / "notebooks" / "05_probing.ipynb"
# Per plotly figure, the page boxes (left, top, right, bottom) of what must not collide: each
# subplot's plot area and its y tick labels, and every annotation (the subplot titles).
LAYOUT_JS = """el => {
  const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  const svg = el.querySelector('.main-svg');
  const subplots = Array.from(el.querySelectorAll('.cartesianlayer > .subplot')).map(g => {
    const id = Array.from(g.classList).find(c => c !== 'subplot');
    const area = el.querySelector(`.draglayer > .${id} .nsewdrag`);
    const ticks = Array.from(g.querySelectorAll('.yaxislayer-above text'))
                       .filter(t => t.textContent.trim()).map(box);
    return {id, area: area ? box(area) : null, ticks};
  });
  const titles = Array.from(el.querySelectorAll('.annotation-text-g, .g-gtitle')).map(g => ({
    text: g.textContent, box: box(g)}));
  const axes = Array.from(el.querySelectorAll('.xaxislayer-above text, [class^="g-x"][class$="title"]'))
                    .filter(t => t.textContent.trim()).map(t => ({text: t.textContent, box: box(t)}));
  return {figure: box(svg), subplots, titles, axes, heatmaps: el.querySelectorAll('.heatmaplayer image').length};
}"""


def _overlap(a, b, slack: float = 1.0) -> bool:
    """Do two (left, top, right, bottom) boxes share more than ``slack`` pixels each way?"""
    return min(a[2], b[2]) - max(a[0], b[0]) > slack and min(a[3], b[3]) - max(a[1], b[1]) > slack


def _layout_problems(layout: dict) -> list[str]:
    """Tick labels over another panel, colliding titles, titles past the figure's edge."""
    problems = []
    for panel in layout["subplots"]:
        for other in layout["subplots"]:
            if other is panel:
                continue
            if other["area"] and any(_overlap(tick, other["area"]) for tick in panel["ticks"]):
                problems.append(f"{panel['id']}'s y labels lie over panel {other['id']}")
            if any(_overlap(a, b) for a in panel["ticks"] for b in other["ticks"]):
                problems.append(f"{panel['id']}'s y labels collide with {other['id']}'s")
    titles, areas = layout["titles"], [panel["area"] for panel in layout["subplots"] if panel["area"]]
    left, top, right, bottom = layout["figure"]
    for i, a in enumerate(titles):
        problems += [f"titles {a['text']!r} and {b['text']!r} collide" for b in titles[i + 1:] if _overlap(a["box"], b["box"])]
        problems += [f"title {a['text']!r} covers {b['text']!r} of an x axis" for b in layout["axes"] if _overlap(a["box"], b["box"])]
        problems += [f"title {a['text']!r} lies over a panel" for area in areas if _overlap(a["box"], area)]
        if a["box"][0] < left - 1 or a["box"][2] > right + 1 or a["box"][1] < top - 1 or a["box"][3] > bottom + 1:
            problems.append(f"title {a['text']!r} runs past the figure's edge")
    return problems


@pytest.mark.slow
def test_probing_notebook_figures_in_chromium(tmp_path):
    """Run All of notebook 05: its three probe figures draw, and in each the y labels of a panel
    stay off its neighbours (a second model's site names once printed over the first panel) and
    the subplot titles neither collide nor run off the figure; measured on the drawn page."""
    reason = _requirements()
    if reason:
        pytest.skip(reason)
    shutil.copy(PROBING_NOTEBOOK, tmp_path / PROBING_NOTEBOOK.name)
    with _notebook_in_chromium(tmp_path, PROBING_NOTEBOOK.name) as (page, errors):
        _wait_for_run_all(page)
        figures = page.locator(".jp-Notebook .js-plotly-plot")  # plotly's mime renderer draws outside .jp-OutputArea-output
        figures.nth(2).locator(".heatmaplayer image").first.wait_for(state="attached", timeout=30_000)
        assert figures.count() == 3, "notebook 05 draws two heatmaps and one side-by-side comparison"
        for i in range(3):
            figure = figures.nth(i)
            figure.scroll_into_view_if_needed()
            layout = figure.evaluate(LAYOUT_JS)
            assert layout["heatmaps"] == len(layout["subplots"]) >= 3, layout  # one drawn heatmap per panel
            assert all(panel["ticks"] for panel in layout["subplots"][:1]), "the first panel has no y labels"
            assert len(layout["titles"]) >= len(layout["subplots"]), "a panel without its title"
            assert not _layout_problems(layout), _layout_problems(layout)
            figure.screenshot(path=str(tmp_path / f"probing_{i}.png"))
        assert page.locator(".jp-OutputArea-output table").count() >= 3, "the accuracy and peak tables render"
        assert not [e for e in errors if "plotly" in e.lower() or "widget" in e.lower()], errors


def _probe_grid(sites: list[str], kinds=("linear", "mlp"), labels=("shape", "colour", "position")):
    import numpy as np
    import xarray as xr

    values = np.random.default_rng(0).random((len(labels), len(kinds), len(sites), 3))
    coords = dict(label=list(labels), probe=list(kinds), site=sites, timestep=[50, 200, 500])
    accuracy = xr.DataArray(values, dims=("label", "probe", "site", "timestep"), coords=coords)
    return xr.Dataset(dict(accuracy=accuracy, val_accuracy=accuracy,
                           chance=xr.DataArray([0.2, 0.14, 0.2][:len(labels)], dims="label", coords=dict(label=list(labels)))))


def test_probe_figures_lay_out_without_collisions_in_chromium(tmp_path):
    """The probe heatmaps as ``workbench probe --html`` writes them, drawn by Chromium from the
    file (no server): one model with both probe kinds, and two models whose site names differ in
    length (toy-unet's beside toy-mmdit's). No y label over a neighbour, no colliding titles."""
    reason = _requirements()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    from workbench.analysis.probe import compare, heatmap

    unet = _probe_grid(["down_blocks.0.out", "mid_block.out", "up_blocks.2.out"])
    mmdit = _probe_grid([f"transformer_blocks.{i}.out.image" for i in range(4)])
    figures = {"one model, both probes": heatmap(unet, title="probe accuracy: feats.zarr"),
               "two models, linear": compare({"toy-unet": unet, "toy-mmdit": mmdit}, probe="linear"),
               "two models, both probes": compare({"toy-unet": unet, "toy-mmdit": mmdit})}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            for i, (what, fig) in enumerate(figures.items()):
                path = tmp_path / f"probe_{i}.html"
                fig.write_html(path, include_plotlyjs=True)
                page.goto(path.as_uri())
                plot = page.locator(".js-plotly-plot").first
                plot.locator(".heatmaplayer image").first.wait_for(state="attached", timeout=20_000)
                layout = plot.evaluate(LAYOUT_JS)
                assert layout["heatmaps"] == len(layout["subplots"]) == len(fig.data), what
                assert not _layout_problems(layout), (what, _layout_problems(layout))
                assert layout["figure"][2] - layout["figure"][0] <= 900, f"{what}: wider than the page"
        finally:
            browser.close()
