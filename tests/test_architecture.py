"""The package's structure: no import circles, no private names across modules, one family choice,
a family's code only in its folder under backends/.

Imports are read from the source (module level and inside functions alike: an import hidden in
a function is still a dependency). ``from pkg import name`` is an edge to ``pkg.name`` when that
is a module, else to ``pkg`` itself; the implicit import of a parent package's ``__init__`` is
not an edge (every module would otherwise depend on ``pipeline/__init__``).
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "pipeline"


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = ("pipeline",) + p.relative_to(PKG).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import of a pipeline module."""
    base = name.split(".") if _is_package(name) else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "pipeline"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                mod = ".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "pipeline":
                continue
            for a in node.names:
                sub = f"{mod}.{a.name}"
                if sub in MODULES:
                    found.append((sub, [], node.lineno))
                else:
                    found.append((mod, [a.name], node.lineno))
    return found


def graph() -> dict[str, set[str]]:
    g = {m: set() for m in MODULES}
    for m, p in MODULES.items():
        for dep, _, _ in _imports(m, p):
            while dep not in MODULES:  # `import pipeline.x.y` of a name inside a module
                dep = dep.rsplit(".", 1)[0]
            if dep != m:
                g[m].add(dep)
    return g


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_the_reader_finds_the_known_edges():
    g = graph()
    assert "pipeline.prepare" in g["pipeline.compile"]
    assert "pipeline.backends" in g["pipeline.prepare"] and "pipeline.tune.database" in g["pipeline.schedule"]
    # a function-level import counts
    assert "pipeline.backends.cpu.rules" in g["pipeline.backends.cpu"]


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_no_private_names_imported_from_other_modules():
    bad = [f"{p.relative_to(PKG.parent)}:{line} imports {n} from {dep}"
           for m, p in MODULES.items() for dep, names, line in _imports(m, p)
           for n in names if n.startswith("_") and not n.startswith("__") and dep != m]
    assert bad == []


def test_the_family_is_chosen_in_one_place():
    """Only backends/__init__.py maps a family name to code; nothing else compares families."""
    compares = []
    for m, p in MODULES.items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Compare):
                names = [n for n in ast.walk(node) if isinstance(n, (ast.Attribute, ast.Name))]
                texts = {getattr(n, "attr", getattr(n, "id", "")) for n in names}
                consts = {c.value for c in ast.walk(node) if isinstance(c, ast.Constant)}
                if "family" in texts or consts & {"cpu", "cuda"}:
                    compares.append(f"{p.relative_to(PKG.parent)}:{node.lineno}")
    outside = [c for c in compares if not c.startswith("pipeline/backends/__init__.py:")]
    assert compares and outside == [], "family compared outside backends/__init__.py: " + ", ".join(outside)


def test_a_family_is_one_folder():
    """Outside backends/ no module imports a family's code (backends/cpu, backends/cuda, ...): it asks
    the family's Backend (``for_preset``, ``for_family``, ``for_tvm_kind``) instead."""
    from pipeline.backends import families

    assert {f"pipeline.backends.{f}" for f in families()} <= set(MODULES)
    bad = [f"{p.relative_to(PKG.parent)}:{line} imports {dep}"
           for m, p in MODULES.items() if not m.startswith("pipeline.backends")
           for dep, _, line in _imports(m, p) if dep.startswith("pipeline.backends.")]
    assert bad == [], "a family's code imported outside backends/: " + ", ".join(bad)


def test_families_do_not_import_each_other():
    """What two families share (Guarded rules, Relax helpers) lives outside both: backends/cuda never
    imports backends/cpu, nor the other way round."""
    from pipeline.backends import families

    bad = []
    for m, p in MODULES.items():
        own = next((f for f in families() if m == f"pipeline.backends.{f}" or m.startswith(f"pipeline.backends.{f}.")), None)
        if own is None:
            continue
        bad += [f"{p.relative_to(PKG.parent)}:{line} imports {dep}" for dep, _, line in _imports(m, p)
                for other in families() if other != own
                and (dep == f"pipeline.backends.{other}" or dep.startswith(f"pipeline.backends.{other}."))]
    assert bad == [], "one family imports another: " + ", ".join(bad)


def _is_kind_name(node) -> bool:
    """``X.kind.name`` or ``kind.name``: a TVM target's kind."""
    return (isinstance(node, ast.Attribute) and node.attr == "name"
            and ((isinstance(node.value, ast.Attribute) and node.value.attr == "kind")
                 or (isinstance(node.value, ast.Name) and node.value.id == "kind")))


def test_no_branch_on_the_tvm_target_kind_outside_backends():
    """What a kind means (its device, its host part) is its family's to say: nothing outside
    backends/ compares ``target.kind.name``."""
    assert _is_kind_name(ast.parse("t.kind.name == 'llvm'").body[0].value.left)
    found = [f"{p.relative_to(PKG.parent)}:{node.lineno}"
             for m, p in MODULES.items() if not m.startswith("pipeline.backends")
             for node in ast.walk(ast.parse(p.read_text()))
             if isinstance(node, ast.Compare) and any(_is_kind_name(n) for n in ast.walk(node))]
    assert found == [], "target kind compared outside backends/: " + ", ".join(found)


def test_unknown_tvm_kind_is_an_error_not_cpu():
    import pytest

    from pipeline import DeployError
    from pipeline.backends import for_tvm_kind

    assert for_tvm_kind("llvm").family == "cpu" and for_tvm_kind("cuda").family == "cuda"
    with pytest.raises(DeployError, match="kind 'vulkan'") as e:
        for_tvm_kind("vulkan")
    assert "cpu" in e.value.hint and "cuda" in e.value.hint


def test_a_family_without_a_runner_gets_the_defaults():
    """The base Backend's hooks are what a family without the feature does."""
    import pytest

    from pipeline import DeployError
    from pipeline.backends import Backend

    b = Backend()
    b.family = "fpga"
    assert b.tuning_device() == "fpga" and b.add_device_files("dir", None) is None
    b.prepare_driver(), b.check_runner(None), b.check_device_files("dir", {})
    with pytest.raises(DeployError, match="no runner"):
        b.runner_launcher({})
    manifest = {"model": {"name": "m", "inputs": [], "outputs": []},
                "target": {"description": "d", "preset": "p", "arch": "x86_64", "tvm_target": {}},
                "versions": {"deploy": "1", "tvm": "0.27"}, "build": {"time_utc": "now"}}
    assert "library (`model.so`) and its `manifest.json` only" in b.bundle_readme(manifest, "b.tar.gz", "m")


def test_unknown_family_is_an_error(tmp_path):
    import pytest

    from pipeline import DeployError
    from pipeline.backends import for_family
    from pipeline.targets import get_preset

    with pytest.raises(DeployError, match="unknown target family 'fpga'"):
        for_family("fpga")
    board = tmp_path / "fpga.toml"
    board.write_text('family = "fpga"\narch = "x86_64"\ndescription = "x"\n[target]\nkind = "llvm"\n')
    with pytest.raises(DeployError, match="family 'fpga'"):
        get_preset(str(board))


def test_cache_key_hashes_the_compile_path_in_every_subpackage():
    from pipeline.ci.cachekey import compile_path_sources

    rel = {p.relative_to(PKG).as_posix() for p in compile_path_sources()}
    for must in ("compile.py", "backends/cpu/rules/conv_matmul.py", "backends/cuda/toolkit.py",
                 "quantize/qdq.py", "frontend/importer.py", "tune/database.py", "schedule.py"):
        assert must in rel, must
    assert not any(r.startswith("ci/") or r == "cli.py" for r in rel)


def test_backends_import_helpers_not_stages():
    """A family's graph rewrites take shared Relax helpers from ``relax_helpers``; the stage list
    (``optimize``) asks the backend for its stages, never the other way round."""
    bad = [f"{p.relative_to(PKG.parent)}:{line} imports {dep}"
           for m, p in MODULES.items() if m.startswith("pipeline.backends")
           for dep, _, line in _imports(m, p) if dep == "pipeline.optimize"]
    assert bad == [], "backends import the optimize stage list: " + ", ".join(bad)
    assert "pipeline.relax_helpers" in graph()["pipeline.backends.cpu.winograd"]


def test_one_name_per_file():
    """No two modules of pipeline/ share a file name (``__init__.py`` aside): a name says which
    module it is without its folder (``ci/build_report.py``, ``run/profile_report.py``)."""
    seen: dict[str, list[str]] = {}
    for p in MODULES.values():
        if p.name != "__init__.py":
            seen.setdefault(p.name, []).append(p.relative_to(PKG.parent).as_posix())
    twice = {n: ps for n, ps in seen.items() if len(ps) > 1}
    assert twice == {}, f"file names used more than once (rename one to say what it is): {twice}"
