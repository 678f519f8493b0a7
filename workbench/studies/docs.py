"""The one doc-block writer. Docs are regenerated from saved results: a report's tables go between marker comments
``<!-- generated:KEY -->`` and ``<!-- /generated:KEY -->`` in a markdown file, replacing what was
there, so no figure in those blocks is typed in by hand. ``read_block`` reads one back (the tests
compare it with what the report writes now); ``findings_table`` lays out docs/findings.md's rows,
which several studies' reports write; ``report_main`` is the command line every study report shares."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"  # docs/ of the source checkout


#: the columns of docs/findings.md: each study's report writes its rows under them (``findings_table``)
FINDINGS_COLUMNS = ("study", "paper and claim", "toy-unet (U-Net)", "toy-mmdit (MM-DiT)", "held?", "doc / notebook")


def findings_table(rows: list[list[str]]) -> str:
    """A docs/findings.md table of ``rows`` (one cell per column of ``FINDINGS_COLUMNS``)."""
    wrong = [row[0] for row in rows if len(row) != len(FINDINGS_COLUMNS)]
    if wrong:
        raise ValueError(f"findings rows need {len(FINDINGS_COLUMNS)} cells ({', '.join(FINDINGS_COLUMNS)}); "
                         f"the rows of {wrong} have another count")
    lines = ["| " + " | ".join(FINDINGS_COLUMNS) + " |", "| " + " | ".join("---" for _ in FINDINGS_COLUMNS) + " |"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _split(doc: str, key: str) -> tuple[Path, str, str, str]:
    """``docs/<doc>`` and its text before, inside and after the ``key`` block's markers."""
    path = DOCS / doc
    source = path.read_text()
    start, end = f"<!-- generated:{key} -->", f"<!-- /generated:{key} -->"
    if start not in source or end not in source:
        raise ValueError(f"{path} has no {start} ... {end} block to fill")
    head, rest = source.split(start, 1)
    inside, tail = rest.split(end, 1)
    return path, head, inside, tail


def read_block(doc: str, key: str) -> str:
    """The text of the ``key`` block of ``docs/<doc>``, as ``write_block`` wrote it."""
    return _split(doc, key)[2].strip("\n")


def write_block(doc: str, key: str, text: str) -> None:
    path, head, _, tail = _split(doc, key)
    path.write_text(f"{head}<!-- generated:{key} -->\n{text.strip()}\n<!-- /generated:{key} -->{tail}")
    print(f"wrote the {key!r} block of {path}")


def report_main(blocks: Callable[[], dict[tuple[str, str], str]], description: str, argv=None) -> None:
    """The command line of every study's ``report.py``: ``blocks()`` gives each generated block's text
    under its (doc, key); printed, or with ``--update-doc`` written into ``docs/<doc>``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update-doc", action="store_true", help="write the tables into their docs' generated blocks")
    args = parser.parse_args(argv)
    for (doc, key), text in blocks().items():
        if args.update_doc:
            write_block(doc, key, text)
        else:
            print(f"<!-- {doc}: {key} -->\n{text}\n")
