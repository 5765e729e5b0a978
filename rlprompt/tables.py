"""The one table formatter: Markdown for reports and READMEs, aligned plain text for the console. Cells
are strings (callers format their numbers); ``|`` inside a Markdown cell is escaped."""

from __future__ import annotations

from collections.abc import Sequence


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table."""
    width = len(headers)
    for i, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(f"row {i} has {len(row)} cells, the header {width}")
    lines = [_md_row(headers), "|" + "---|" * width]
    lines += [_md_row(row) for row in rows]
    return "\n".join(lines)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[object]], numeric_from: int = 1) -> str:
    """A console table: columns padded to their widest cell, the first ``numeric_from`` columns flush left
    and the rest flush right, a rule under the header."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < numeric_from else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()  # fmt: skip

    header = line(cells[0])
    return "\n".join([header, "-" * len(header)] + [line(row) for row in cells[1:]])


def number(x: float | None, digits: int = 3, missing: str = "—") -> str:
    """``x`` with ``digits`` decimals, or ``missing`` for None and NaN."""
    if x is None or x != x:
        return missing
    return f"{x:.{digits}f}"


def _md_row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
