#!/bin/sh
# The install steps, written once: `make install` and the Dockerfile both run this script, so the
# image is built with exactly the commands a developer's machine runs (tests/unit/test_deploy.py
# fails if either grows pip steps of its own).
#
#   scripts/install.sh PIP TARGET...
#   make install:  scripts/install.sh .venv/bin/pip -e '.[test]'
#   Dockerfile:    scripts/install.sh /opt/venv/bin/pip .
#
# Where packages come from is pip's own configuration (pip.conf or PIP_* variables): here the
# local wheel folder with the CPU torch wheel, in the image the CPU wheel index (PIP_EXTRA_INDEX_URL).
set -eu
pip="$1"
shift
case "$pip" in */*) pip="$(cd "$(dirname "$pip")" && pwd)/$(basename "$pip")" ;; esac
cd "$(dirname "$0")/.."
"$pip" install -q --upgrade pip setuptools
# The spaCy model shim first (local, no network), then the project with its pins.
"$pip" install -q --no-build-isolation ./vendor/en_core_web_sm
"$pip" install -q --no-build-isolation "$@"
rm -rf vendor/en_core_web_sm/build vendor/en_core_web_sm/*.egg-info
