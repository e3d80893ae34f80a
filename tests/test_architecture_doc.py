"""docs/architecture.md lists every module and subpackage of src/fastraft in its module table,
and nothing that does not exist: a module added, moved or removed without the doc fails here."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "src" / "fastraft"
DOC = ROOT / "docs" / "architecture.md"


def _table_paths() -> set[str]:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("<!-- module-table")
    rows = []
    for line in text[start:].splitlines()[1:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        rows.append(line)
    paths = set()
    for row in rows:
        m = re.match(r"\|\s*`(fastraft/[^`]*)`\s*\|", row)
        if m:
            paths.add(m.group(1))
    return paths


def _modules() -> set[str]:
    out = set()
    for f in PKG.rglob("*"):
        if "__pycache__" in f.parts or f.suffix not in (".py", ".pyx"):
            continue
        rel = f.relative_to(PKG.parent).as_posix()
        if f.name == "__init__.py" and f.parent != PKG:
            out.add(f.parent.relative_to(PKG.parent).as_posix() + "/")
        else:
            out.add(rel)
    return out


def test_every_module_is_in_the_table() -> None:
    missing = _modules() - _table_paths()
    assert not missing, f"docs/architecture.md module table lacks: {sorted(missing)}"


def test_the_table_names_only_modules_that_exist() -> None:
    stale = _table_paths() - _modules()
    assert not stale, f"docs/architecture.md module table lists missing modules: {sorted(stale)}"


def test_every_subpackage_states_its_job() -> None:
    for init in PKG.glob("*/__init__.py"):
        doc = init.read_text(encoding="utf-8").lstrip()
        assert doc.startswith('"""') and len(doc.split('"""')[1].strip()) > 20, init
