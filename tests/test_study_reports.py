"""The study reports write the published tables from the saved results: every generated block of
docs/ is either a timing table (written by a benchmark) or owned by exactly one study report, and
equals what that report writes now (no figure typed in or left stale). The findings rows keep
findings.md's columns."""

from __future__ import annotations

import importlib
import re

import pytest
from test_layout import ROOT, TIMING_BLOCKS

from workbench.studies.docs import DOCS, FINDINGS_COLUMNS, findings_table, read_block
from workbench.studies.svd.report import findings_row

REPORTS = sorted(p.parent.name for p in (ROOT / "workbench" / "studies").glob("*/report.py"))


@pytest.fixture(scope="module")
def owners() -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(doc, key) -> [(study, the text its report writes now)]."""
    found: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for study in REPORTS:
        for block, text in importlib.import_module(f"workbench.studies.{study}.report").blocks().items():
            found.setdefault(block, []).append((study, text))
    return found


def _generated_blocks() -> list[tuple[str, str]]:
    return [(path.name, key) for path in sorted(DOCS.glob("*.md"))
            for key in re.findall(r"^<!-- generated:([\w-]+) -->$", path.read_text(), re.M)]


def test_every_generated_block_has_one_owner_and_is_what_it_writes_now(owners):
    assert len(REPORTS) >= 6
    wrong = []
    for doc, key in _generated_blocks():
        if doc in TIMING_BLOCKS and (TIMING_BLOCKS[doc] is None or key in TIMING_BLOCKS[doc]):
            continue  # a benchmark's timing table (tests/test_layout.py holds benchmarks to these)
        writers = owners.get((doc, key), [])
        if len(writers) != 1:
            wrong.append(f"{doc} {key}: written by {[s for s, _ in writers] or 'no study report'}")
        elif writers[0][1].strip() != read_block(doc, key):
            wrong.append(f"{doc} {key}: differs from what {writers[0][0]}/report.py writes from the saved results")
    assert not wrong, "\n".join(wrong)


def test_every_block_a_report_writes_has_its_markers_in_the_doc(owners):
    missing = sorted(set(owners) - set(_generated_blocks()))
    assert not missing, f"report blocks with no <!-- generated:KEY --> markers in their doc: {missing}"


def test_findings_rows_keep_the_columns_and_a_short_row_is_refused():
    table = findings_table([["study"] + ["cell"] * (len(FINDINGS_COLUMNS) - 1)]).splitlines()
    assert table[0] == "| " + " | ".join(FINDINGS_COLUMNS) + " |" and len(table) == 3
    with pytest.raises(ValueError, match="need 6 cells"):
        findings_table([["SVD editing", "a claim"]])


def test_the_svd_findings_row_names_a_missing_results_file():
    with pytest.raises(FileNotFoundError, match="svd_toy-mmdit.json"):
        findings_row({"toy-unet": {}})
