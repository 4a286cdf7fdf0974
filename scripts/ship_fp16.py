"""Copy a model or method checkpoint folder for shipping inside the package, float tensors stored as float16.

Every ``*.safetensors`` file (also in sub-folders, e.g. a Stage II checkpoint's ``stage1/``) is rewritten with
its floating-point tensors in float16, except 0-d tensors (a temperature) which stay as they are; every other
file is copied unchanged. Loaders copy the values into their float32 parameters (`load_state_dict` converts),
so a shipped checkpoint computes in float32 with weights rounded to float16: half the bytes. Evaluate the
shipped copy, not the source, for the numbers in the docs.

    python scripts/ship_fp16.py /tmp/real12/lit-real src/zscir/assets/lit-clipart

A LiT folder with a tuned text tower ships the same way: ``text_lora.safetensors`` (a LoRA delta, a few MB)
or ``text_tower.safetensors`` (the whole tower, 45 MB in float16) is rounded like the heads, and each file's
metadata (the base tower a delta was trained over) is kept.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from zscir.backbones.tensor_files import load_safetensors


def ship(src: Path, dst: Path) -> None:
    if not (src / "config.json").is_file():
        raise SystemExit(f"error: {src} is not a model or checkpoint folder (no config.json)")
    if dst.exists() and not dst.is_dir():
        raise SystemExit(f"error: {dst} exists and is not a folder")
    if dst.is_dir() and any(dst.iterdir()) and not (dst / "config.json").is_file():
        raise SystemExit(f"error: {dst} is not empty and not a model or checkpoint folder; choose a new or empty "
                         f"folder, or an earlier shipped copy")
    for path in sorted(src.rglob("*")):
        if not path.is_file() or path.name == "training_state.pt":  # optimizer state is not shipped
            continue
        out = dst / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".safetensors":
            state = load_safetensors(path)  # refuses damaged files and NaN / inf weights
            with safe_open(str(path), framework="pt") as f:  # kept: e.g. a LoRA delta names its base tower
                meta = dict(f.metadata() or {})
            save_file({k: (v.to(torch.float16) if v.is_floating_point() and v.dim() > 0 else v).contiguous()
                       for k, v in state.items()}, str(out),
                      metadata={**meta, "format": "pt", "note": "float16 storage"})
            out.chmod(0o644)
        else:
            shutil.copyfile(path, out)
        print(f"{out}  {out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python scripts/ship_fp16.py SRC_FOLDER DST_FOLDER")
    ship(Path(sys.argv[1]), Path(sys.argv[2]))
