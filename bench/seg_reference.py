#!/usr/bin/env python3
"""PyTorch reference for `lesion bench seg`: the same nets as crates/lesion-models, built
layer for layer, timed the same way (train step = forward, per-image soft dice loss,
backward, Adam; inference = forward in eval mode under no_grad). Prints one JSON line:
{"arch", "precision", "channels_last", "train_images_per_s", "infer_images_per_s", "peak_rss_mib"}.
--precision bf16|fp16 runs forward + loss under torch.autocast (fp16 also with a GradScaler);
--channels-last converts the net and the input to torch.channels_last.

    python bench/seg_reference.py --arch unet --size 128 --batch 8 --threads 2
"""
import argparse
import contextlib
import json
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def ch(c, width):
    return max(1, round(c * width))


class DoubleConvBn(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Unet(nn.Module):
    """Ronneberger's U-Net with BN (crates/lesion-models/src/unet.rs)."""

    def __init__(self, base=32, depth=4, width=1.0, dropout=0.5):
        super().__init__()
        w = [ch(base << l, width) for l in range(depth + 1)]
        self.downs = nn.ModuleList()
        cin = 3
        for l in range(depth):
            self.downs.append(DoubleConvBn(cin, w[l]))
            cin = w[l]
        self.bottom = DoubleConvBn(cin, w[depth])
        self.ups = nn.ModuleList([nn.ConvTranspose2d(w[l + 1], w[l], 2, stride=2) for l in reversed(range(depth))])
        self.up_convs = nn.ModuleList([DoubleConvBn(2 * w[l], w[l]) for l in reversed(range(depth))])
        self.head = nn.Conv2d(w[0], 1, 1)
        self.dropout = dropout

    def forward(self, x):
        skips = []
        for d in self.downs:
            x = d(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = F.dropout(self.bottom(x), self.dropout, self.training)
        for up, conv, s in zip(self.ups, self.up_convs, reversed(skips)):
            x = conv(torch.cat([up(x), s], 1))
        return self.head(x)


def conv_relu_stack(cin, spec):
    layers = []
    for k, c in spec:
        layers += [nn.Conv2d(cin, c, k, padding=k // 2), nn.ReLU(inplace=True)]
        cin = c
    return nn.Sequential(*layers)


ENC = [32, 64, 128]
DEC = [[128, 128, 64], [64, 64, 32], [32, 32, 32]]
DEC_K = [11, 5, 5]


class Codella(nn.Module):
    """codella-fc (fc=True, crates/lesion-models/src/codella.rs) and unet-bn (fc=False, unet_bn.rs)."""

    def __init__(self, size=128, width=1.0, dropout=0.5, fc=True):
        super().__init__()
        enc = [ch(c, width) for c in ENC]
        self.blocks = nn.ModuleList()
        cin = 3
        for c in enc:
            self.blocks.append(conv_relu_stack(cin, [(5, c)] * 3))
            cin = c
        self.fc = fc
        side = size >> 3
        if fc:
            flat = enc[2] * side * side
            self.fc1 = nn.Linear(flat, ch(8192, width))
            self.fc2 = nn.Linear(ch(8192, width), flat)
            self.shape = (enc[2], side, side)
            c = enc[2]
        else:
            c = ch(256, width)
            self.bottleneck = nn.Conv2d(enc[2], c, 5, padding=2)
            self.bottleneck_bn = nn.BatchNorm2d(c)
        self.stages = nn.ModuleList()
        self.bns = nn.ModuleList()
        for i, widths in enumerate(DEC):
            cin = c + enc[2 - i]
            self.bns.append(nn.BatchNorm2d(cin) if not fc else nn.Identity())
            self.stages.append(conv_relu_stack(cin, [(k, ch(w, width)) for k, w in zip(DEC_K, widths)]))
            c = ch(widths[-1], width)
        self.head = nn.Conv2d(c, 1, 1)
        self.dropout = dropout

    def forward(self, x):
        skips = []
        for b in self.blocks:
            x = b(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        if self.fc:
            n = x.shape[0]
            x = F.relu(self.fc1(x.flatten(1)))
            x = F.dropout(x, self.dropout, self.training)
            x = F.relu(self.fc2(x)).view(n, *self.shape)
        else:
            x = F.relu(self.bottleneck_bn(self.bottleneck(x)))
        for i, (stage, bn) in enumerate(zip(self.stages, self.bns)):
            x = torch.cat([F.interpolate(x, scale_factor=2, mode="nearest"), skips[2 - i]], 1)
            x = F.dropout(bn(x), self.dropout, self.training)
            x = stage(x)
        return self.head(x)


def soft_dice_loss(logits, target, smooth=1.0):
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    inter = (p * t).sum(1)
    dice = (2 * inter + smooth) / (p.sum(1) + t.sum(1) + smooth)
    return 1 - dice.mean()


# --precision: forward + loss under torch.autocast with this dtype; fp16 also scales the loss
# (the Rust side: lesion_core::precision::{Autocast, GradScaler}).
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(dev, precision):
    dtype = AUTOCAST_DTYPES[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(dev.type, dtype=dtype)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="unet", choices=["unet", "unet-bn", "codella-fc"])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--base", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=list(AUTOCAST_DTYPES))
    ap.add_argument("--channels-last", action="store_true")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    dev = torch.device("cuda" if a.device in ("cuda", "auto") and torch.cuda.is_available() else a.device)
    torch.manual_seed(0)
    if a.arch == "unet":
        net = Unet(base=a.base)
    else:
        net = Codella(size=a.size, fc=(a.arch == "codella-fc"))
    net = net.to(dev)
    x = torch.randn(a.batch, 3, a.size, a.size, device=dev)
    y = (torch.rand(a.batch, 1, a.size, a.size, device=dev) > 0.5).float()
    if a.channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-5)
    scaler = torch.amp.GradScaler(dev.type, enabled=a.precision == "fp16")

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def step():
        # Autocast covers forward + loss only; backward runs outside it (as on the Rust side).
        with autocast(dev, a.precision):
            loss = soft_dice_loss(net(x), y)
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
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"arch": a.arch, "precision": a.precision, "channels_last": a.channels_last, "train_images_per_s": train, "infer_images_per_s": infer, "peak_rss_mib": peak}))


if __name__ == "__main__":
    main()
