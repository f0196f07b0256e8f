"""Loads a bundle's TorchScript files with PyTorch alone and compares them with lesion's outputs.

    python tools/torchscript_check.py BUNDLE IO.safetensors

For every entry of `bundle.json`'s `torchscript` list (file `torchscript/<name>.pt`), IO holds
`<name>.input` (a [0, 1] batch), `<name>.output` (what lesion's own code gives for it) and the
same for a batch of two, `<name>.input2` / `<name>.output2`. Each file is loaded with
`torch.jit.load` (CPU), run under `torch.no_grad()`, and compared. The last line printed is one
JSON object: {"torch": version, "models": {name: {"max_abs_diff", "max_abs_diff_batch2",
"shape", "shape_batch2", "device_constants"}}} (`device_constants`: devices written into the
graph's code).
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file


def main() -> None:
    bundle, io_path = sys.argv[1], sys.argv[2]
    with open(os.path.join(bundle, "bundle.json")) as f:
        card = json.load(f)
    io = load_file(io_path)
    models = {}
    for entry in card.get("torchscript", []):
        name = os.path.splitext(os.path.basename(entry["file"]))[0]
        module = torch.jit.load(os.path.join(bundle, entry["file"]), map_location="cpu")
        module.eval()
        report = {}
        for suffix, key in (("", "max_abs_diff"), ("2", "max_abs_diff_batch2")):
            x = io[f"{name}.input{suffix}"]
            want = io[f"{name}.output{suffix}"]
            with torch.no_grad():
                have = module(x)
            if have.shape != want.shape:
                raise SystemExit(
                    f"{entry['file']}: output {tuple(have.shape)}, lesion gives {tuple(want.shape)}"
                )
            report[key] = float((have - want).abs().max())
            report["shape" + ("_batch2" if suffix else "")] = list(have.shape)
        # A device written into the graph pins that op to it (`map_location` moves only
        # the weights): none means the module runs on whatever device its input is on.
        report["device_constants"] = module.code.count("torch.device(")
        models[name] = report
    print(json.dumps({"torch": torch.__version__, "models": models}))


if __name__ == "__main__":
    main()
