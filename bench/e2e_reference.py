#!/usr/bin/env python3
"""PyTorch reference for `lesion bench e2e`: the pipeline a PyTorch user would write for the same
work, from the image files (Pillow decoding, a torch DataLoader with worker processes, the same
augmentation law, the same nets as bench/seg_reference.py and bench/cls_reference.py,
torch.optim.Adam). `lesion bench e2e` runs each mode as a child process and times it from the
outside (process start included); the script prints progress lines on stdout:

    seg-train    one line {"epoch": k, "images": n} per finished epoch (after its checkpoint)
    seg-predict  one line {"mask": path, "width": w, "height": h}
    cls-tta      one line {"images": n, "replicas": r}

    python bench/e2e_reference.py seg-train --manifest ph2.csv --size 128 --epochs 3 --out /tmp/r
"""
import argparse
import csv
import json
import math
import os
import random
import sys

import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cls_reference import EfficientNetLite  # noqa: E402
from seg_reference import Unet, soft_dice_loss  # noqa: E402

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def read_manifest(path, need_masks):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if need_masks:
        rows = [r for r in rows if r.get("mask_path")]
    base = os.path.dirname(os.path.abspath(path))
    for r in rows:  # a manifest's paths may be relative to its own folder
        for k in ("image_path", "mask_path"):
            if r.get(k):
                r[k] = os.path.join(base, r[k])
    return rows


def load_rgb(path, size):
    img = Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC)
    return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(size, size, 3).permute(2, 0, 1)


def load_mask(path, size):
    m = Image.open(path).convert("L").resize((size, size), Image.NEAREST)
    return (torch.frombuffer(bytearray(m.tobytes()), dtype=torch.uint8).view(1, size, size) > 127).float()


def affine_theta(rng, size):
    """The paper's law as crates/lesion-seg/src/augment.rs draws it: rotation U(-270, 270) deg,
    shift U(-0.1, 0.1) x size per axis, zoom U(0.8, 1.2) per axis, flips with p = 0.5."""
    a = math.radians(rng.uniform(-270.0, 270.0))
    sx, sy = rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1)
    zx, zy = rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.2)
    fx = -1.0 if rng.random() < 0.5 else 1.0
    fy = -1.0 if rng.random() < 0.5 else 1.0
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c * zx * fx, -s * zy * fy, 2 * sx], [s * zx * fx, c * zy * fy, 2 * sy]])


class SegFiles(torch.utils.data.Dataset):
    """Decodes, resizes and warps each image and mask in the worker, every epoch."""

    def __init__(self, rows, size):
        self.rows, self.size = rows, size

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        r = self.rows[i]
        x = load_rgb(r["image_path"], self.size).float().unsqueeze(0)
        y = load_mask(r["mask_path"], self.size).unsqueeze(0)
        # `random` is seeded per worker by the DataLoader, as a PyTorch user relies on.
        theta = affine_theta(random, self.size).unsqueeze(0)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        y = F.grid_sample(y, grid, mode="nearest", padding_mode="border", align_corners=False)
        return x[0], (y[0] > 0.5).float()


def normalize_255(x):
    return (x / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def autocast(a):
    """`torch.autocast` as the user would write it for --precision (a no-op for fp32)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(a.precision)
    return torch.autocast("cpu", dtype=dtype, enabled=dtype is not None)


def layout(net, a):
    return net.to(memory_format=torch.channels_last) if a.channels_last else net


def seg_train(a):
    rows = read_manifest(a.manifest, True)
    ds = SegFiles(rows, a.size)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=a.batch, shuffle=True, num_workers=a.workers,
        persistent_workers=a.workers > 0, drop_last=False)
    torch.manual_seed(a.seed)
    net = layout(Unet(base=a.base, depth=a.depth, dropout=a.dropout), a)
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    os.makedirs(a.out, exist_ok=True)
    for epoch in range(1, a.epochs + 1):
        net.train()
        for x, y in loader:
            with autocast(a):
                loss = soft_dice_loss(net(normalize_255(x)).float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch},
                   os.path.join(a.out, "last.pt"))
        print(json.dumps({"epoch": epoch, "images": len(ds)}), flush=True)


def seg_predict(a):
    net = Unet(base=a.base, depth=a.depth, dropout=a.dropout)
    state = torch.load(a.weights, map_location="cpu")
    net.load_state_dict(state["model"])
    net = layout(net, a).eval()
    img = Image.open(a.image).convert("RGB")
    w, h = img.size
    x = load_rgb(a.image, a.size).float().unsqueeze(0)
    with torch.no_grad(), autocast(a):
        logits = net(normalize_255(x)).float()
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    mask = (torch.sigmoid(logits)[0, 0] > 0.5).to(torch.uint8) * 255
    Image.fromarray(mask.numpy(), mode="L").save(a.out)
    print(json.dumps({"mask": a.out, "width": w, "height": h}), flush=True)


class ClsFiles(torch.utils.data.Dataset):
    def __init__(self, rows, size):
        self.rows, self.size = rows, size

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return load_rgb(self.rows[i]["image_path"], self.size).float() / 255.0


def dihedral8(x):
    """Flips x quarter turns: the 8 views of `--tta fixed8`."""
    views = []
    for k in range(4):
        r = torch.rot90(x, k, dims=(2, 3))
        views += [r, torch.flip(r, dims=(3,))]
    return views


def cls_tta(a):
    rows = read_manifest(a.manifest, False)[: a.images]
    loader = torch.utils.data.DataLoader(
        ClsFiles(rows, a.size), batch_size=a.batch, num_workers=a.workers)
    torch.manual_seed(0)
    net = layout(EfficientNetLite(a.variant, 3, a.size), a).eval()
    probs = []
    with torch.no_grad(), autocast(a):
        for x in loader:
            x = (x - IMAGENET_MEAN) / IMAGENET_STD
            p = torch.stack([F.softmax(net(v).float(), dim=1) for v in dihedral8(x)]).mean(0)
            probs.append(p)
    probs = torch.cat(probs)
    with open(a.out, "w") as f:
        f.write("image,melanoma,seborrheic_keratosis\n")
        for r, p in zip(rows, probs.tolist()):
            f.write(f"{r['id']},{p[0]:.6f},{p[1]:.6f}\n")
    print(json.dumps({"images": len(rows), "replicas": 8}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["seg-train", "seg-predict", "cls-tta"])
    ap.add_argument("--manifest")
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--base", type=int, default=32)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=2017)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--weights")
    ap.add_argument("--image")
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--variant", default="lite0")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--channels-last", action="store_true")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    {"seg-train": seg_train, "seg-predict": seg_predict, "cls-tta": cls_tta}[a.mode](a)


if __name__ == "__main__":
    main()
