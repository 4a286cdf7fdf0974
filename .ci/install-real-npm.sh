#!/usr/bin/env bash
# Installs the npm picture packages of the real corpus (scripts/build_real_corpus.py: emoji-google,
# emoji-twitter, openmoji, twemoji, fluent-emoji, flags) into one node_modules folder, about 240 MB.
# Not run by default CI (the tests of these readers skip without the packages). zscir never fetches them
# itself: run this once, then build with the default --npm-dir, or give the printed folder with --npm-dir.
#   .ci/install-real-npm.sh [PREFIX]     # default PREFIX: ~/.local/share/zscir/npm
# Versions are pinned: the captions and counts in docs/DATA.md were measured with these.
set -euo pipefail
prefix="${1:-$HOME/.local/share/zscir/npm}"
command -v npm >/dev/null || { echo "install-real-npm: npm not found (apt install npm)" >&2; exit 1; }
mkdir -p "$prefix"
npm install --prefix "$prefix" --no-audit --no-fund --no-save --ignore-scripts \
    emoji-datasource-google@16.0.0 emoji-datasource-twitter@16.0.0 openmoji@17.0.0 \
    @twemoji/svg@15.0.0 fluentui-emoji@1.3.0 flag-icons@7.5.0 >/dev/null
echo "$prefix/node_modules"
