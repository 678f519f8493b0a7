"""How far the scorers can be trusted: the judge outside its world, the OCR reader on others' fonts (docs/judge.md)."""
