"""ASCII tables drawn the way etcdctl draws them (``-w table``), so both read the same.

etcdctl renders with a Go table writer whose layout is fixed: a ``+---+---+`` rule above the
header, below it and at the bottom (none between rows); one space of padding on each side of a
cell; headers upper-cased and centred (the odd space of a centred header goes to the right);
cells right-aligned; a cell wider than 30 columns that has spaces is wrapped onto several lines,
breaking where the lines come out most even (a word longer than the limit stays whole).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

__all__ = ["render_table", "wrap_cell"]

_MAX_CELL_WIDTH = 30  # the writer's wrap limit for a cell
_OVERLONG_PENALTY = 100_000  # extra cost of a line longer than the limit (only a long word)


def display_width(s: str) -> int:
    """Terminal columns: wide (East Asian) characters take two, combining marks none."""
    w = 0
    for ch in s:
        if unicodedata.combining(ch):
            continue
        w += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return w


def _wrap_words(words: list[str], limit: int) -> list[list[str]]:
    """Split words into lines with the least raggedness (sum of squared shortfalls)."""
    n = len(words)
    lengths = [display_width(w) for w in words]
    brk = [n] * n
    cost = [0] * (n + 1)
    for i in range(n - 1, -1, -1):
        if sum(lengths[i:]) + (n - 1 - i) <= limit:
            cost[i], brk[i] = 0, n  # the rest fits on one line: free
            continue
        best = None
        phrase = lengths[i]
        for j in range(i + 1, n):
            if j > i + 1:
                phrase += 1 + lengths[j - 1]
            c = (limit - phrase) ** 2 + cost[j] + (_OVERLONG_PENALTY if phrase > limit else 0)
            if best is None or c < best:
                best, brk[i] = c, j
        cost[i] = best if best is not None else 0
    lines, i = [], 0
    while i < n:
        lines.append(words[i:brk[i]])
        i = brk[i]
    return lines


def wrap_cell(text: str) -> tuple[list[str], int]:
    """The lines a cell is drawn on (each paragraph wrapped at the writer's limit) and the width
    it claims: the wrap limit itself once wrapped, even when the wrapped lines come out shorter
    (the writer does the same, and the rules' lengths follow)."""
    paragraphs = text.split("\n")
    limit = min(max(display_width(p) for p in paragraphs), _MAX_CELL_WIDTH)
    width = limit
    out: list[str] = []
    for i, para in enumerate(paragraphs):
        words = para.split(" ")
        lim = max([limit, *(display_width(w) for w in words)])
        if i > 0:
            out.append(" ")
        for line in _wrap_words(words, lim):
            out.append(" ".join(line))
            width = max(width, display_width(out[-1]))
    return out, width


def _pad_center(s: str, width: int) -> str:
    gap = width - display_width(s)
    if gap <= 0:
        return s
    left = gap // 2
    return " " * left + s + " " * (gap - left)


def _pad_left(s: str, width: int) -> str:
    return " " * max(0, width - display_width(s)) + s


def render_table(header: list[str], rows: list[list[str]]) -> str:
    """The whole table as etcdctl prints it, each line ending in a newline."""
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"row has {len(row)} cells, the header {len(header)}")
    wrapped_head = [wrap_cell(h.replace("_", " ").replace(".", " ").strip().upper())
                    for h in header]
    wrapped_body = [[wrap_cell(c) for c in row] for row in rows]
    widths = [w for _, w in wrapped_head]
    for wrapped in wrapped_body:
        for i, (_, w) in enumerate(wrapped):
            widths[i] = max(widths[i], w)
    head = [lines for lines, _ in wrapped_head]
    body = [[lines for lines, _ in row] for row in wrapped_body]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+\n"

    def draw(cells: list[list[str]], pad: Callable[[str, int], str]) -> str:
        height = max(len(c) for c in cells)
        out = ""
        for k in range(height):
            parts = [pad(c[k] if k < len(c) else "", widths[i])
                     for i, c in enumerate(cells)]
            out += "| " + " | ".join(parts) + " |\n"
        return out

    text = rule + draw(head, _pad_center) + rule
    for cells in body:
        text += draw(cells, _pad_left)
    return text + rule
