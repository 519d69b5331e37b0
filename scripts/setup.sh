#!/usr/bin/env bash
# Set up deploy on a fresh Debian machine: cross toolchains and qemu (apt, as root),
# then a virtual environment in .venv with deploy and its test dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(g++-aarch64-linux-gnu gcc-aarch64-linux-gnu g++-arm-linux-gnueabihf gcc-arm-linux-gnueabihf qemu-user-static binutils)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: cross targets need: sudo apt-get install ${missing[*]}" >&2
  fi
fi

# headless Chromium renders `deploy profile`'s report.html in the tests (they skip it when absent)
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing chromium (headless, for the HTML report test)"
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; }; } \
      || echo "setup: chromium is not available here; the HTML report test will be skipped" >&2
  else
    echo "setup: the HTML report test needs: sudo apt-get install chromium" >&2
  fi
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,peers]' 2>&1 | grep -v -E "^WARNING: Location|is ignored" || true
.venv/bin/python -c "import pipeline, tvm, onnxruntime, torch; print('setup: ok, tvm', tvm.__version__)"
# TVM's runtime for ARM boards, cached once for the runners in ARM artifacts: aarch64 from PyPI's
# wheels, armv7 built from the wheels' C++ sources with the Debian cross compiler (~2.5 min, once)
.venv/bin/python -c "from pipeline.backends.cpu.board import runtime_libs as device
for arch in ('aarch64', 'armv7l'):
    print('setup:', arch, 'runtime in', device.runtime_dir(arch))"
