"""How far the scorers can be trusted: the shapes-world judge outside its world and against two independent readings, and the offline OCR reader on text the project did not draw (docs/judge.md)."""
