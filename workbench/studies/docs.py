"""The one doc-block writer. Docs are regenerated from saved results: a report's tables go between marker comments
``<!-- generated:KEY -->`` and ``<!-- /generated:KEY -->`` in a markdown file, replacing what was
there, so no figure in those blocks is typed in by hand."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"  # docs/ of the source checkout


def write_block(doc: str, key: str, text: str) -> None:
    path = DOCS / doc
    source = path.read_text()
    start, end = f"<!-- generated:{key} -->", f"<!-- /generated:{key} -->"
    if start not in source or end not in source:
        raise ValueError(f"{path} has no {start} ... {end} block to fill")
    head, rest = source.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{text.strip()}\n{end}{tail}")
    print(f"wrote the {key!r} block of {path}")
