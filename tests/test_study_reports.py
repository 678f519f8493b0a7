"""The study reports write the published tables from the saved results: every generated block of
docs/ that the skips, SVD, attention and quality reports own equals what the report writes now (no figure
typed in or left stale), and the findings rows keep findings.md's columns."""

from __future__ import annotations

import json

import pytest

from workbench.results import results_dir
from workbench.studies.attention.report import daam_table
from workbench.studies.quality.report import shipped_block
from workbench.studies.docs import FINDINGS_COLUMNS, findings_table, read_block
from workbench.studies.skips.report import BLOCKS as SKIPS_BLOCKS
from workbench.studies.svd.report import findings_row


def _svd_findings() -> str:
    return findings_table([findings_row({m: json.loads((results_dir() / f"svd_{m}.json").read_text())
                                         for m in ("toy-unet", "toy-mmdit")})])


OWNED = {**SKIPS_BLOCKS, ("findings.md", "findings-svd"): _svd_findings, ("attention.md", "peers-daam"): daam_table,
         ("reference_models.md", "quality-shipped"): shipped_block}


@pytest.mark.parametrize("doc, key", list(OWNED), ids=lambda v: str(v))
def test_each_block_is_what_its_report_writes_from_the_saved_results(doc, key):
    assert OWNED[(doc, key)]().strip() == read_block(doc, key)


def test_findings_rows_keep_the_columns_and_a_short_row_is_refused():
    table = findings_table([["study"] + ["cell"] * (len(FINDINGS_COLUMNS) - 1)]).splitlines()
    assert table[0] == "| " + " | ".join(FINDINGS_COLUMNS) + " |" and len(table) == 3
    with pytest.raises(ValueError, match="need 6 cells"):
        findings_table([["SVD editing", "a claim"]])


def test_the_svd_findings_row_names_a_missing_results_file():
    with pytest.raises(FileNotFoundError, match="svd_toy-mmdit.json"):
        findings_row({"toy-unet": {}})
