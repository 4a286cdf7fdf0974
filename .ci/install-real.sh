#!/usr/bin/env bash
# Installs the Debian packages whose real captioned pictures the real-picture tests read
# (tests/test_real_corpus.py, test_real_benchmark.py, test_real_model_search.py): the Noto Color Emoji
# font, Unicode's emoji-test.txt, the Tux Paint stamps and libcairo2 (for cairosvg). The npm picture packages
# and the icon themes are large and not installed here (.ci/install-real-npm.sh, docs/DATA.md). Idempotent and quiet; a failed install only
# leaves those tests skipping (they skip cleanly without the packages), so it never fails CI. Called by .ci/run.
set -uo pipefail
pkgs=()
[ -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || pkgs+=(fonts-noto-color-emoji)
[ -e /usr/share/unicode/emoji/emoji-test.txt ] || pkgs+=(unicode-data)
[ -d /usr/share/tuxpaint/stamps ] || pkgs+=(tuxpaint-stamps-default)
# cairosvg (the SVG rasteriser of the npm emoji/flag and icon-theme readers) needs the cairo library
ls /usr/lib/*/libcairo.so.2 >/dev/null 2>&1 || pkgs+=(libcairo2)
if [ ${#pkgs[@]} -gt 0 ]; then
    SUDO=""
    if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}"; } >/dev/null 2>&1 \
        || echo "install-real: could not install ${pkgs[*]}; the real-picture tests will skip" >&2
fi
exit 0
