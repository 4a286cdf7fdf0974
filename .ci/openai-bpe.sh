#!/usr/bin/env bash
# Prints the path of OpenAI CLIP's BPE merges file (bpe_simple_vocab_16e6.txt.gz) for the peer tokenizer
# tests (tests/test_peers_tokenizer.py), or nothing. The file ships in the open_clip_torch wheel, which
# cannot be an ordinary dependency (it pulls torchvision, whose wheel does not import with the CPU torch):
# the wheel is downloaded without dependencies and only the merges file and OpenAI's reference tokenizer.py
# (MIT) are extracted from it. Nothing is installed. Called by .ci/run; failures only make those tests skip.
set -uo pipefail
dest="${1:-${TMPDIR:-/tmp}/zscir-openai-bpe}"
file="$dest/open_clip/bpe_simple_vocab_16e6.txt.gz"
if [ ! -f "$file" ]; then
    mkdir -p "$dest"
    python -m pip download -q --no-deps --only-binary :all: "open_clip_torch>=2.20" -d "$dest" >&2 || exit 0
    python - "$dest" <<'PY' >&2 || exit 0
import glob, sys, zipfile
dest = sys.argv[1]
with zipfile.ZipFile(sorted(glob.glob(f"{dest}/open_clip_torch-*.whl"))[-1]) as z:
    for name in ("open_clip/bpe_simple_vocab_16e6.txt.gz", "open_clip/tokenizer.py"):
        z.extract(name, dest)
PY
fi
[ -f "$file" ] && echo "$file"
exit 0
