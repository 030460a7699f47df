"""EOT variants at ε = 2/255: which ones make the default photos robust to the four transforms?

The library's ``eot`` averages log P(target) over 8 random transforms per step, with momentum
and a constant sign step. This script tries, on the same photos and the same robustness check as
``cnnlab robustness`` (flip, 80 % centre crop, 30° rotation, grayscale; top-1 == target):

* ``--loss logp``     the library's objective (mean log P over the transforms);
* ``--loss margin``   Carlini-Wagner margin (target logit minus the best other), capped at κ;
* ``--loss softmin``  -log mean(1/P): dominated by the transforms that fool least;
* ``--anneal``        cosine step size from α down to α/10 over the budget;
* ``--steps`` / ``--samples``: more compute.

The variants override the library's two hooks (``EOT.objective``, ``EOT.step_size_at``) here,
not in the library, because none of them beat the default (see ``benchmarks/RESULTS.md``).

Usage: python benchmarks/bench_eot_variants.py --photos coffee,camera --loss logp --anneal --steps 300
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

import torch

from cnnlab.attacks.eot import EOT
from cnnlab.attacks.targets import default_photos
from cnnlab.attacks.transforms import robustness_transforms
from cnnlab.images import pil_to_tensor
from cnnlab.models.pretrained import load_pretrained
from cnnlab.runs import seed_everything


class EOTVariant(EOT):
    def __init__(self, *args, loss: str = "logp", kappa: float = 5.0, anneal: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.loss, self.kappa, self.anneal = loss, kappa, anneal

    def objective(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.loss == "logp":
            return super().objective(x, target)
        B = x.shape[0]
        logits = self.logits(self.distribution.sample(x, self.samples))  # B*n, 1000
        t = target.repeat_interleave(self.samples)[:, None]
        logp = torch.log_softmax(logits, dim=1).gather(1, t).view(B, self.samples)
        if self.loss == "softmin":
            return -(torch.logsumexp(-logp, dim=1) - math.log(self.samples)), logp.exp()
        other = logits.scatter(1, t, float("-inf")).amax(1, keepdim=True)
        return (logits.gather(1, t) - other).clamp_max(self.kappa).view(B, self.samples).mean(1), logp.exp()

    def step_size_at(self, t: int) -> float:
        if not self.anneal:
            return self.step_size
        return self.step_size * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t / max(1, self.steps))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", default="peppers,chelsea,coffee,camera")
    ap.add_argument("--loss", default="logp", choices=("logp", "margin", "softmin"))
    ap.add_argument("--kappa", type=float, default=5.0)
    ap.add_argument("--anneal", action="store_true")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--eps", type=float, default=2.0, help="in grey levels")
    ap.add_argument("--robust-threshold", type=float, default=None, help="EOT's stopping threshold")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--targets", default="", help="override default targets: photo=class,... (class index)")
    args = ap.parse_args()

    model = load_pretrained("mobilenet_v2:IMAGENET1K_V1")
    checks = {"none": lambda v: v, **robustness_transforms()}
    wanted = args.photos.split(",")
    targets = {k: int(v) for k, v in (kv.split("=") for kv in args.targets.split(",") if kv)}
    for photo in (p for p in default_photos() if p.name in wanted):
        if photo.name in targets:
            photo = dataclasses.replace(photo, default_target=targets[photo.name])
        seed_everything(args.seed)
        attack = EOTVariant(model, eps=args.eps / 255, steps=args.steps, samples=args.samples,
                            preprocess=model.preprocess_tensor, loss=args.loss, kappa=args.kappa,
                            anneal=args.anneal, robust_threshold=args.robust_threshold)
        out = attack(pil_to_tensor(photo.image)[None], photo.default_target)
        row = {"photo": photo.name, "target": photo.default_target, "loss": args.loss, "anneal": args.anneal, "steps": int(out.steps[0]),
               "samples": args.samples, "seconds": round(out.seconds, 1)}
        with torch.no_grad():
            for name, f in checks.items():
                p = torch.softmax(model(model.preprocess_tensor(f(out.adversarial))).float(), 1)[0]
                row[name] = {"p_target": round(float(p[photo.default_target]), 3),
                             "top1_is_target": int(p.argmax()) == photo.default_target}
        row["transforms_survived"] = sum(row[n]["top1_is_target"] for n in checks if n != "none")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
