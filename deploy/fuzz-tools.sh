#!/usr/bin/env bash
# Installs the API fuzzer (schemathesis, from PyPI) into a virtual
# environment under deploy/.cache/fuzz-venv, unless it is there already at
# the pinned version. The fuzz test (tests/tests/fuzz.rs) runs it from there.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION="4.32.5"
VENV=deploy/.cache/fuzz-venv

if [[ -x "$VENV/bin/schemathesis" ]] && "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  exit 0
fi
command -v python3 >/dev/null || { echo "python3 is required for the API fuzz (apt-get install python3 python3-venv)" >&2; exit 1; }
if ! python3 -m venv --help >/dev/null 2>&1; then
  if command -v apt-get >/dev/null; then
    apt-get install -y python3-venv >/dev/null
  else
    echo "python3's venv module is missing (install python3-venv)" >&2
    exit 1
  fi
fi
rm -rf "$VENV"
mkdir -p deploy/.cache
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
"$VENV/bin/schemathesis" --version
