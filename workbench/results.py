"""Where the shipped study results live: ``docs/results/`` of the source checkout (JSON and HTML
written by the studies' jobs in ``workbench/studies/`` and the timing scripts in ``benchmarks/``),
or the folder named by ``WORKBENCH_RESULTS``.

Notebooks and docs read saved results through ``results_dir()`` instead of guessing paths, so a
copy of the results elsewhere (an installed package has no ``docs/``) works by setting the variable.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "WORKBENCH_RESULTS"


def results_dir(must_exist: bool = False) -> Path:
    """The results folder: ``$WORKBENCH_RESULTS`` if set, else ``docs/results`` beside the
    ``workbench`` package in a source checkout. With ``must_exist``, a missing folder raises an
    error that says how to point at one."""
    if os.environ.get(ENV):
        folder = Path(os.environ[ENV])
    else:
        folder = Path(__file__).resolve().parent.parent / "docs" / "results"
    if must_exist and not folder.is_dir():
        raise FileNotFoundError(f"no study results at {folder}; run the study jobs (workbench/studies/) "
                                f"from a source checkout, or set {ENV} to a folder holding their JSON files")
    return folder
