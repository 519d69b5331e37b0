"""The README's module table is generated from the modules' docstrings and cannot drift from them."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REGENERATE = "python scripts/module_table.py --write"


def _module_table():
    spec = importlib.util.spec_from_file_location("module_table", ROOT / "scripts" / "module_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_module_says_what_it_is_in_one_line():
    """A docstring whose first paragraph is one line, a whole sentence (the table's row)."""
    bad = []
    for p in sorted((ROOT / "pipeline").rglob("*.py")):
        doc = ast.get_docstring(ast.parse(p.read_text()), clean=True)
        first = (doc or "").split("\n\n", 1)[0]
        if not doc or "\n" in first or first.rstrip().endswith((":", ",", ";")) or len(first) > 115:
            bad.append(f"{p.relative_to(ROOT)}: {first[:80]!r}")
    assert bad == [], ("modules without a one-line summary (the first line of the docstring, then a blank line): "
                       + "; ".join(bad))


def test_the_readme_module_table_is_the_generated_one():
    mt = _module_table()
    table = mt.table()
    rows = [r for r in table.splitlines()[2:]]
    assert len(rows) == len(list((ROOT / "pipeline").rglob("*.py")))  # one row per module, packages included
    assert "| `run/verify.py` | Verify: " in table and table.index("`frontend/`") < table.index("`build.py`") \
        < table.index("`run/`")  # the data's order: frontend, compile stages, then the run side
    current = mt.readme_table((ROOT / "README.md").read_text())
    assert current is not None, f"README.md lost the module table's markers; put them back and run `{REGENERATE}`"
    assert current == table, f"README.md's module table differs from the modules' docstrings: run `{REGENERATE}`"


def test_the_generator_rewrites_only_the_table(tmp_path):
    mt = _module_table()
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n\n{mt.BEGIN}\n| module | what it is |\n|---|---|\n| `old.py` | gone |\n{mt.END}\n\nafter\n")
    assert mt.write(readme) is True
    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n\n") and text.endswith(f"{mt.END}\n\nafter\n")
    assert mt.readme_table(text) == mt.table() and "`old.py`" not in text
    assert mt.write(readme) is False  # already current
