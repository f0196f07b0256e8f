#!/usr/bin/env python3
"""PyTorch reference for `lesion bench cls`: EfficientNet-Lite0/1/2 built layer for layer as
crates/lesion-models/src/efficientnet.rs (TF "SAME" padding computed statically from the
configured image size, ReLU6, no squeeze-excitation, BatchNorm eps 1e-3 / momentum 0.01, stem 32
and head 1280 not width-scaled, first and last stage not depth-scaled, drop-connect
0.2*idx/n_blocks in training, dropout before the classifier), with a new random 3-class head.
Timed the same way as the Rust side:

* train step = forward (train mode), softmax cross-entropy, backward, Adam;
* inference = forward in eval mode under no_grad (images/s);
* TTA = one image replicated R times as one batch of R, forward in eval mode under no_grad,
  softmax, mean over replicas (original images/s).

* --precision bf16|fp16: forward + loss under torch.autocast (fp16 also with a GradScaler);
  --channels-last: the net and the inputs in torch.channels_last.

Prints one JSON line: {"variant", "precision", "channels_last", "train_images_per_s",
"infer_images_per_s", "tta_images_per_s"}.

    python bench/cls_reference.py --variant lite0 --size 224 --batch 16 --tta 50 --threads 8
"""
import argparse
import contextlib
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

BN_EPS = 1e-3
BN_MOMENTUM = 0.01
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
DEPTH_DIVISOR = 8
DROP_CONNECT_RATE = 0.2
STEM_KERNEL = 3
STEM_STRIDE = 2

# (repeats, kernel, stride, expand_ratio, in_channels, out_channels), as efficientnet.rs STAGES.
STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]

# width, depth, resolution, dropout
SCALING = {
    "lite0": (1.0, 1.0, 224, 0.2),
    "lite1": (1.0, 1.1, 240, 0.2),
    "lite2": (1.1, 1.2, 260, 0.3),
}


def round_filters(filters, width):
    f = filters * width
    d = DEPTH_DIVISOR
    rounded = max(int(f + d / 2) // d * d, d)
    if rounded < 0.9 * f:
        rounded += d
    return rounded


def blocks_of(variant):
    width, depth, _, _ = SCALING[variant]
    out = []
    last = len(STAGES) - 1
    for i, (repeats, k, s, e, cin, cout) in enumerate(STAGES):
        in_c = round_filters(cin, width)
        out_c = round_filters(cout, width)
        reps = repeats if i in (0, last) else int(math.ceil(depth * repeats))
        if i == 0:
            in_c = STEM_CHANNELS
        for r in range(reps):
            first = r == 0
            out.append((in_c if first else out_c, out_c, k, s if first else 1, e))
    return out


def same_pad(inp, k, s):
    """(before, after) of Conv2dStaticSamePadding for a square input of side `inp`."""
    out = (inp + s - 1) // s
    total = max((out - 1) * s + k - inp, 0)
    return total // 2, total - total // 2


def same_out(inp, s):
    return (inp + s - 1) // s


def bn(c):
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


def relu6(x):
    return x.clamp(0.0, 6.0)


class MbConv(nn.Module):
    def __init__(self, cin, cout, k, s, e, side, drop_connect):
        super().__init__()
        mid = cin * e
        self.has_expand = e != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = bn(mid)
        self._depthwise_conv = nn.Conv2d(mid, mid, k, stride=s, groups=mid, bias=False)
        b, a = same_pad(side, k, s)
        self.pad = (b, a, b, a)
        self._bn1 = bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = bn(cout)
        self.skip = s == 1 and cin == cout
        self.drop_connect = drop_connect

    def forward(self, xs):
        x = relu6(self._bn0(self._expand_conv(xs))) if self.has_expand else xs
        if any(self.pad):
            x = F.pad(x, self.pad)
        x = relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        if not self.skip:
            return x
        if self.training and self.drop_connect > 0:
            keep = 1.0 - self.drop_connect
            mask = torch.floor(torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device) + keep)
            x = x / keep * mask
        return x + xs


class EfficientNetLite(nn.Module):
    def __init__(self, variant="lite0", num_classes=3, image_size=None):
        super().__init__()
        _, _, res, dropout = SCALING[variant]
        side = image_size or res
        b, a = same_pad(side, STEM_KERNEL, STEM_STRIDE)
        self.stem_pad = (b, a, b, a)
        side = same_out(side, STEM_STRIDE)
        self._conv_stem = nn.Conv2d(3, STEM_CHANNELS, STEM_KERNEL, stride=STEM_STRIDE, bias=False)
        self._bn0 = bn(STEM_CHANNELS)
        specs = blocks_of(variant)
        n = len(specs)
        blocks = []
        for i, (cin, cout, k, s, e) in enumerate(specs):
            blocks.append(MbConv(cin, cout, k, s, e, side, DROP_CONNECT_RATE * i / n))
            side = same_out(side, s)
        self._blocks = nn.ModuleList(blocks)
        last_c = specs[-1][1]
        self._conv_head = nn.Conv2d(last_c, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = bn(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)
        self.dropout = dropout

    def forward(self, x):
        if any(self.stem_pad):
            x = F.pad(x, self.stem_pad)
        x = relu6(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            x = b(x)
        x = relu6(self._bn1(self._conv_head(x)))
        x = x.mean(dim=(2, 3))
        x = F.dropout(x, self.dropout, self.training)
        return self._fc(x)


# --precision: forward + loss under torch.autocast with this dtype; fp16 also scales the loss
# (the Rust side: lesion_core::precision::{Autocast, GradScaler}).
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(dev, precision):
    dtype = AUTOCAST_DTYPES[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(dev.type, dtype=dtype)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="lite0", choices=list(SCALING))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--tta", type=int, default=50)
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=list(AUTOCAST_DTYPES))
    ap.add_argument("--channels-last", action="store_true")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    dev = torch.device("cuda" if a.device in ("cuda", "auto") and torch.cuda.is_available() else a.device)
    torch.manual_seed(0)
    net = EfficientNetLite(a.variant, a.classes, a.size).to(dev)
    x = torch.randn(a.batch, 3, a.size, a.size, device=dev)
    y = torch.randint(0, a.classes, (a.batch,), device=dev)
    img = torch.rand(1, 3, a.size, a.size, device=dev)
    if a.channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
        img = img.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-5)
    scaler = torch.amp.GradScaler(dev.type, enabled=a.precision == "fp16")

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def step():
        # Autocast covers forward + loss only; backward runs outside it (as on the Rust side).
        with autocast(dev, a.precision):
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    def infer_once():
        with autocast(dev, a.precision):
            net(x)

    net.train()
    for _ in range(a.warmup):
        step()
    sync()
    t = time.perf_counter()
    for _ in range(a.steps):
        step()
    sync()
    train = a.steps * a.batch / (time.perf_counter() - t)

    def tta_one():
        with autocast(dev, a.precision):
            return F.softmax(net(img.repeat(a.tta, 1, 1, 1)), dim=1).mean(0)

    net.eval()
    with torch.no_grad():
        for _ in range(a.warmup):
            infer_once()
        sync()
        t = time.perf_counter()
        for _ in range(a.steps):
            infer_once()
        sync()
        infer = a.steps * a.batch / (time.perf_counter() - t)
        for _ in range(a.warmup):
            tta_one()
        sync()
        t = time.perf_counter()
        for _ in range(a.steps):
            tta_one()
        sync()
        tta = a.steps / (time.perf_counter() - t)
    print(json.dumps({"variant": a.variant, "precision": a.precision, "channels_last": a.channels_last, "train_images_per_s": train, "infer_images_per_s": infer, "tta_images_per_s": tta}))


if __name__ == "__main__":
    main()
