"""What `deploy build` reports: the terminal table, the JSON summary, JUnit XML for CI systems."""

from __future__ import annotations

from pathlib import Path


def verification_text(r: dict) -> str:
    v = r.get("verification") or {}
    if v.get("status") == "failed" and v.get("problems"):
        return f"failed: {v['problems'][0]}"
    if v.get("status") in ("passed", "failed"):
        return f"{v['status']} (max abs {v.get('max_abs') or 0:.2g})"
    if v.get("status") == "not verified":
        return f"not verified: {v.get('reason', '')}"
    return "-"


def summary_json(results: list[dict], out: Path, extra: dict | None = None) -> dict:
    """``extra``: what else the run records (``shard``: K, N, config sha256, versions; ``merged``)."""
    keep = ("name", "model", "target", "precision", "status", "key", "seconds", "bytes", "verification", "error", "hint")
    counts = {s: sum(r["status"] == s for r in results) for s in ("built", "cached", "failed")}
    verified = sum((r.get("verification") or {}).get("status") == "passed" for r in results)
    return {"output": str(out), "counts": {**counts, "verified": verified, "total": len(results)},
            "ok": counts["failed"] == 0, "entries": [{k: r.get(k) for k in keep} for r in results], **(extra or {})}


def run_properties(info: dict) -> dict[str, str]:
    """A shard or merge record as JUnit properties: which shard(s), the config's hash, the versions."""
    props = {"shard": f"{info['index']}/{info['count']}"} if "index" in info else {"shards": str(info["count"])}
    props["config_sha256"] = info["config_sha256"]
    props.update({f"version.{k}": str(v) for k, v in sorted(info["versions"].items())})
    return props


def print_table(results: list[dict], console) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table("entry", "status", "time", "size", "verification", "error", title="deploy build")
    colors = {"built": "green", "cached": "cyan", "failed": "red"}
    for r in results:
        status = r["status"] + (" (key unchanged)" if r["status"] == "cached" else "")
        t.add_row(r["name"], f"[{colors[r['status']]}]{status}[/]",
                  f"{r['seconds']:.1f} s" if r.get("seconds") is not None else "-",
                  f"{r['bytes'] / 1e6:.2f} MB" if r.get("bytes") else "-",
                  escape(verification_text(r)), escape((r.get("error") or "")[:300]))
    console.print(t)
    c = summary_json(results, Path("."))["counts"]
    console.print(f"{c['total']} entries: {c['built']} built, {c['cached']} cached, {c['failed']} failed; "
                  f"{c['verified']} verified against ONNX Runtime")


def junit_xml(results: list[dict], properties: dict[str, str] | None = None) -> str:
    import xml.etree.ElementTree as ET

    failures = sum(r["status"] == "failed" for r in results)
    total = sum(r.get("seconds") or 0 for r in results)
    suites = ET.Element("testsuites", name="deploy build", tests=str(len(results)), failures=str(failures))
    suite = ET.SubElement(suites, "testsuite", name="deploy build", tests=str(len(results)), failures=str(failures),
                          errors="0", skipped="0", time=f"{total:.3f}")
    if properties:
        props = ET.SubElement(suite, "properties")
        for k, v in properties.items():
            ET.SubElement(props, "property", name=k, value=v)
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=f"deploy.{r['model']}", name=r["name"],
                             time=f"{r.get('seconds') or 0:.3f}")
        if r["status"] == "failed":
            fail = ET.SubElement(case, "failure", message=(r.get("error") or "failed")[:500], type="BuildFailure")
            fail.text = (r.get("error") or "") + (f"\nfix: {r['hint']}" if r.get("hint") else "")
        out = ET.SubElement(case, "system-out")
        out.text = (f"status: {r['status']}\nkey: {r.get('key')}\nbytes: {r.get('bytes')}\n"
                    f"verification: {verification_text(r)}\n")
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
