"""The family-free part of a bundle's README (`deploy package`).

The family-free part of a bundle's README (`deploy package`): the model, its inputs and outputs,
and, for an artifact without a runner, how to load its library. A family with a runner adds how
to copy and run the bundle on its board (``Backend.bundle_readme``)."""

from __future__ import annotations


def readme_head(manifest: dict) -> str:
    """Title, what compiled it for which target, and the table of inputs and outputs."""
    m, t = manifest["model"], manifest["target"]
    ver = manifest["versions"]
    rows = "\n".join(f"| {kind} | `{s['name']}` | {s['dtype']} | {s['shape']} |"
                     for kind, specs in (("input", m["inputs"]), ("output", m["outputs"])) for s in specs)
    return f"""# {m['name']} for {t['description']}

Compiled by deploy {ver['deploy']} with Apache TVM {ver['tvm']} for target `{t['preset']}`
({t['arch']}, `{t['tvm_target'].get('mcpu', 'generic')}`) on {manifest['build']['time_utc']}.

| | name | dtype | shape |
|---|---|---|---|
{rows}
"""


def library_only(manifest: dict) -> str:
    """The section of a bundle that holds the library and manifest only: load it with TVM's runtime."""
    t, ver = manifest["target"], manifest["versions"]
    return f"""
This bundle holds the compiled library (`model.so`) and its `manifest.json` only: no runner was built
for {t['arch']}. Load `model.so` with TVM {ver['tvm']}'s runtime on the board
(`tvm.runtime.load_module` + `tvm.relax.VirtualMachine`), or with `deploy run` where deploy is installed.
"""
