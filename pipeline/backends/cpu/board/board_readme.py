"""The one-page README that goes into a board bundle (`deploy package`)."""

from __future__ import annotations

from ....files import output_file
from ....bundle_readme import library_only, readme_head
from .runner import QEMU_PACKAGE

BOARD_OS = {
    "aarch64": "a 64-bit Linux (aarch64): Raspberry Pi OS 64-bit (bookworm), Ubuntu 22.04+ or Debian 12+ arm64, "
               "Jetson Linux 36 (JetPack 6)",
    "armv7l": "a 32-bit hard-float Linux (armhf): Raspberry Pi OS 32-bit (bookworm), Debian 12+ armhf",
    "x86_64": "a 64-bit x86 Linux",
}


def board_readme(manifest: dict, bundle_name: str, folder: str) -> str:
    """The one-page README that goes into a CPU artifact's bundle: copy, run, what it prints."""
    m, t, dev = manifest["model"], manifest["target"], manifest.get("device")
    head = readme_head(manifest)
    if dev is None:
        return head + library_only(manifest)
    emu = dev.get("emulation") or {}
    emu_line = (f"\nWithout a board (Debian, `apt-get install {QEMU_PACKAGE}`): `{emu['qemu']} -cpu {emu['qemu_cpu']} "
                f"-L {emu['sysroot']} ./runner`." if emu.get("qemu") else "")
    first = m["inputs"][0]["name"] if m["inputs"] else "input"
    out = m["outputs"][0] if m["outputs"] else {"name": "output", "dtype": "float32", "shape": []}
    return head + f"""
## Copy

```sh
scp {bundle_name} user@board:
ssh user@board
tar xzf {bundle_name} && cd {folder}
sha256sum -c SHA256SUMS        # optional: every file as built
```

The board needs {BOARD_OS.get(t['arch'], t['arch'] + ' Linux')}; that is, glibc {dev['glibc']} or newer and
libstdc++. Nothing else: TVM's runtime is in `lib/` ({dev['runtime_source']}); no Python.

## Run

```sh
./runner                                       # random inputs, 10 timed runs
./runner --input {first}=x.npy --output-dir out   # your inputs as .npy (numpy.save), outputs as .npy
./runner --repeat 100 --threads 4              # median over 100 runs, 4 threads
```

The runner finds `model.so` and `manifest.json` beside itself (`--artifact DIR` for another place).
Inputs not given are random; a given input must match the table above in name, shape and dtype.

## What it prints

```
output {out['name']}: {out['dtype']}{out['shape']} -> out/{output_file(out['name'])}
latency: median 12.345 ms, min 12.001 ms, max 13.210 ms over 10 runs
```

The latency is measured on the board: the number that counts (timings under emulation do not).{emu_line}
Exit codes: 0 ok; 2 a bad argument or input (the message lists the inputs the model expects);
3 an error inside TVM's runtime. A "cannot open shared object file" or "Illegal instruction"
means the board is not {t['arch']} / lacks a CPU feature of `{t['tvm_target'].get('mcpu', 'generic')}`.
"""
