#!/usr/bin/env bash
# CI entry point for any CI system (GitLab, Jenkins, Buildkite, GitHub Actions):
#   scripts/ci-build.sh [deploy.toml] [extra `deploy build` options...]
# Sets the project up (scripts/setup.sh, idempotent), builds the matrix into artifacts/ and
# writes reports next to it. Exit code: 0 all entries ok, 1 an entry failed, 2 a config or
# setup error. Cache between runs by keeping artifacts/ (and your tuning databases): entries
# whose key is unchanged are not rebuilt.
#
# Environment:
#   DEPLOY_SKIP_SETUP=1   use an existing .venv (or PYTHON=...) instead of running setup.sh
#   DEPLOY_REPORTS=DIR    where build-report.json and junit.xml go [reports]
#   DEPLOY_JOBS=N         parallel builds [config's build.jobs]
#   DEPLOY_SHARD=K/N      build only shard K of N (`deploy build --shard`); combine the N
#                         artifacts/ directories with `deploy build-merge DIR... -o OUT`
set -euo pipefail
cd "$(dirname "$0")/.."

config=${1:-deploy.toml}
[ $# -gt 0 ] && shift
reports=${DEPLOY_REPORTS:-reports}

if [ "${DEPLOY_SKIP_SETUP:-0}" != 1 ]; then
  scripts/setup.sh
fi
py=${PYTHON:-.venv/bin/python}
mkdir -p "$reports"

opts=()
[ -n "${DEPLOY_JOBS:-}" ] && opts=(--jobs "$DEPLOY_JOBS")
[ -n "${DEPLOY_SHARD:-}" ] && opts+=(--shard "$DEPLOY_SHARD")

set +e
"$py" -m pipeline.cli build "$config" "${opts[@]}" --json --junit "$reports/junit.xml" "$@" > "$reports/build-report.json"
rc=$?
set -e
if [ -f artifacts/SHA256SUMS ]; then
  (cd artifacts && sha256sum -c --quiet SHA256SUMS) || { echo "ci-build: artifacts do not match SHA256SUMS" >&2; exit 1; }
fi
exit $rc
