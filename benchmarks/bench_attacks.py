"""Targeted PGD: cnnlab's `pgd` against torchattacks' PGD, same images, ε, step size and budget.

Both attack the photos at their own resolution through the same differentiable
resize + centre crop + MobileNetV2 (torchattacks gets a wrapper module that applies it), start
from the clean image (no random start), and use signed steps of α on the target's log-probability
(torchattacks' targeted mode minimizes the cross-entropy to the target: the same loss).
torchattacks returns float images; they are rounded to 8 bits (which stays inside the ball,
since the originals and the ball's ends are on the 8-bit grid) before success is judged, exactly
as cnnlab judges its own: P(target) >= 0.9 on the 8-bit image.

Three rows, run interleaved per image so that machine noise hits them alike:
  torchattacks      PGD, all `--steps` steps
  cnnlab (full)     pgd with threshold=None: all steps too (the per-step cost, like for like)
  cnnlab (stop)     pgd as the CLI runs it: stops an image once its 8-bit version reaches 0.9

Run:  .venv/bin/python benchmarks/bench_attacks.py [--steps 20] [--threads 1] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from cnnlab.attacks import PGD
from cnnlab.attacks.targets import default_photos
from cnnlab.images import pil_to_tensor
from cnnlab.models.pretrained import load_pretrained

THRESHOLD = 0.9


class PhotoModel(nn.Module):
    """The classifier on photos at their own resolution: resize + centre crop inside."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.model.preprocess_tensor(x))


def p_target(model, x: torch.Tensor, target: int) -> float:
    with torch.no_grad():
        return float(torch.softmax(model(x), 1)[0, target])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="step budget for every attack")
    ap.add_argument("--eps", type=float, default=2 / 255)
    ap.add_argument("--alpha", type=float, default=0.5 / 255)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a busy machine)")
    ap.add_argument("--out", type=Path, default=None, help="also write the table as JSON here")
    args = ap.parse_args()

    import torchattacks

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_pretrained("mobilenet_v2")
    wrapped = PhotoModel(model).eval()
    photos = default_photos()

    def run_torchattacks(x, target):
        atk = torchattacks.PGD(wrapped, eps=args.eps, alpha=args.alpha, steps=args.steps, random_start=False)
        atk.set_mode_targeted_by_label(quiet=True)
        t0 = time.perf_counter()
        adv = atk(x, torch.tensor([target]))
        seconds = time.perf_counter() - t0
        return (adv * 255).round() / 255, seconds, args.steps

    def run_cnnlab(threshold):
        def go(x, target):
            attack = PGD(model, eps=args.eps, steps=args.steps, step_size=args.alpha, threshold=threshold,
                         preprocess=model.preprocess_tensor)
            out = attack(x, target)
            return out.adversarial, out.seconds, int(out.steps[0])
        return go

    variants = {"torchattacks PGD": run_torchattacks, "cnnlab pgd (full budget)": run_cnnlab(None),
                "cnnlab pgd (early stop)": run_cnnlab(THRESHOLD)}
    rows = []
    for photo in photos:
        x = pil_to_tensor(photo.image)[None]  # 1, 3, H, W
        target = photo.default_target
        for name, fn in variants.items():
            adv, seconds, steps = fn(x, target)
            linf = float((adv - x).abs().max() * 255)
            p = p_target(wrapped, adv, target)
            rows.append({"attack": name, "image": photo.name, "target": target, "p_target": p,
                         "success": p >= THRESHOLD, "linf_grey": round(linf, 3), "steps": steps, "seconds": seconds})
            print(f"{photo.name:<8s} {name:<26s} P(target) {p:.3f}  L∞ {linf:.2f}/255  {steps:3d} steps  "
                  f"{seconds:6.2f} s", flush=True)

    print()
    base = sum(r["seconds"] for r in rows if r["attack"] == "torchattacks PGD")
    summary = {}
    for name in variants:
        mine = [r for r in rows if r["attack"] == name]
        total = sum(r["seconds"] for r in mine)
        summary[name] = {"success": sum(r["success"] for r in mine), "images": len(mine), "seconds": total,
                         "time_ratio_vs_torchattacks": total / base}
        print(f"{name:<26s} success {summary[name]['success']}/{len(mine)}  total {total:6.1f} s  "
              f"time / torchattacks {total / base:.2f}")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                        "summary": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
