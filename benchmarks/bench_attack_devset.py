"""Attacks on the development set, each judged on its saved 8-bit PNG through `predict`'s PIL path.

For every photo of :func:`cnnlab.attacks.devset.dev_photos` (12 photos nobody chose for the
attack) the target is drawn by a fixed seed over the 1000 classes outside the clean top-5
(:func:`cnnlab.attacks.targets.random_target`, seed ``TARGET_SEED``). Each method attacks each
photo at its own resolution at each ε; the result is saved as a PNG, reloaded with PIL, and
classified by MobileNetV2 through `cnnlab predict`'s preprocessing (PIL resize + centre crop)
as it is and after each of the four transforms done with PIL (mirror, 80 % centre crop resized
back, 30° rotation, grayscale). Reported per method and ε: the target top-1 on the plain image,
under each transform and under all four; the attack's own bar (P(target) >= 0.9 on the plain
image and under every transform); steps and seconds per photo.

``eot`` options switch its levers one at a time (``--loss logp``, ``--decay 1``, ``--samples``,
``--kappa``) so each can be measured against the default. ``--methods eot-legacy`` is the baseline:
the EOT of commit ``LEGACY_COMMIT`` (before issue 19: mean log P over 8 random transforms of the
full-size photo, constant step), read from git and run unchanged.

Run:  nice -n 5 .venv/bin/python benchmarks/bench_attack_devset.py --methods pgd,eot --eps 2,4 \
          --out /tmp/devset.jsonl   (then --summary /tmp/devset.jsonl [--figure F.png] prints the table)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cnnlab.attacks import ATTACKS
from cnnlab.attacks.devset import TARGET_SEED, dev_photos
from cnnlab.attacks.targets import random_target
from cnnlab.attacks.transforms import pil_transforms
from cnnlab.images import load_image, pil_to_tensor, save_png
from cnnlab.models.pretrained import load_pretrained
from cnnlab.runs import seed_everything

BAR = 0.9
LEGACY_COMMIT = "4cceea1"  # the last commit with the pre-issue-19 EOT
TRANSFORMS = ("flip", "crop", "rotate", "grayscale")


@torch.no_grad()
def judge(model, png: Path, target: int) -> dict:
    """P(target) and 'target top-1' on the PNG as saved and after each PIL transform."""
    img = load_image(png)
    views = {"none": img, **{k: f(img) for k, f in pil_transforms().items()}}
    out = {}
    for name, v in views.items():
        p = torch.softmax(model(model.preprocess(v)[None]).float(), 1)[0]
        out[name] = {"p_target": round(float(p[target]), 4), "top1": int(p.argmax()) == target}
    return out


def legacy_eot() -> type:
    """The pre-issue-19 ``EOT`` class and its ``RandomTransforms``, loaded from git unchanged."""
    import subprocess
    import sys
    import types

    def source(path: str) -> str:
        return subprocess.run(["git", "show", f"{LEGACY_COMMIT}:{path}"], check=True, capture_output=True,
                              text=True, cwd=Path(__file__).resolve().parents[1]).stdout

    mod = types.ModuleType("legacy_eot")
    sys.modules["legacy_eot"] = mod  # dataclasses look their module up there
    exec(compile(source("src/cnnlab/attacks/transforms.py"), "legacy_transforms.py", "exec"), mod.__dict__)
    eot = source("src/cnnlab/attacks/eot.py").replace("from cnnlab.attacks.transforms import RandomTransforms", "")
    exec(compile(eot, "legacy_eot.py", "exec"), mod.__dict__)
    return mod.EOT


def attack_kwargs(args, method: str) -> dict:
    if method != "eot":
        return {}
    kw = {"loss": args.loss}
    for name in ("samples", "kappa", "decay"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    return kw


def run(args) -> None:
    torch.set_num_threads(args.threads)
    model = load_pretrained("mobilenet_v2:IMAGENET1K_V1")
    photos = dev_photos(args.data_root)
    rng = np.random.default_rng(TARGET_SEED)
    targets = []
    for ph in photos:  # the draw covers the whole set in order, so a subset keeps the same targets
        with torch.no_grad():
            p = torch.softmax(model(model.preprocess_tensor(pil_to_tensor(ph.image)[None])).float(), 1)[0]
        targets.append(random_target(p.numpy(), rng)[0])
    wanted = set(args.photos.split(",")) if args.photos else None
    tmp = Path(tempfile.mkdtemp(prefix="devset-"))
    with open(args.out, "a") as f:
        for method in args.methods.split(","):
            for eps in (float(e) for e in args.eps.split(",")):
                for ph, target in zip(photos, targets):
                    if wanted and ph.name not in wanted:
                        continue
                    seed_everything(args.seed)
                    cls = legacy_eot() if method == "eot-legacy" else ATTACKS.get(method)
                    attack = cls(model, eps=eps / 255, steps=args.steps, threshold=BAR,
                                                 preprocess=model.preprocess_tensor, **attack_kwargs(args, method))
                    x = pil_to_tensor(ph.image)[None]
                    t0, c0 = time.perf_counter(), time.process_time()
                    out = attack(x, target)
                    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
                    png = save_png(out.adversarial[0], tmp / f"{method}-{eps:g}-{ph.name}.png")
                    row = {"variant": args.variant or method, "method": method, "eps_grey": eps, "photo": ph.name,
                           "size": list(ph.image.size), "target": target, "target_name": model.categories[target],
                           "steps": int(out.steps[0]), "seconds": round(seconds, 2),
                           "cpu_seconds": round(cpu, 2), **judge(model, png, target)}
                    print(json.dumps(row), flush=True)
                    f.write(json.dumps(row) + "\n")
                    f.flush()


def summary(paths: list[str], figure: str | None = None) -> None:
    rows = [json.loads(line) for path in paths for line in open(path)]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["variant"], r["eps_grey"]), []).append(r)
    print("| variant | ε | photos | plain top-1 | flip | crop | rotate | grayscale | all four | bar P ≥ 0.9 everywhere "
          "| steps (median) | wall s/photo (median, max) | CPU s/photo (median) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (variant, eps), rs in sorted(groups.items()):
        n = len(rs)
        cnt = lambda f: f"{sum(map(f, rs))}/{n}"  # noqa: E731
        cols = [cnt(lambda r: r["none"]["top1"])] + [cnt(lambda r, t=t: r[t]["top1"]) for t in TRANSFORMS]
        cols.append(cnt(lambda r: all(r[t]["top1"] for t in TRANSFORMS)))
        cols.append(cnt(lambda r: all(r[t]["p_target"] >= BAR for t in ("none", *TRANSFORMS))))
        secs = [r["seconds"] for r in rs]
        cpu = [r.get("cpu_seconds", float("nan")) for r in rs]
        print(f"| {variant} | {eps:g}/255 | {n} | " + " | ".join(cols)
              + f" | {statistics.median(r['steps'] for r in rs):g} | {statistics.median(secs):.1f}, {max(secs):.1f} "
              f"| {statistics.median(cpu):.1f} |")
    print("\n| photo (target) | " + " | ".join(sorted({v for v, _ in groups})) + " |")
    print("|---|" + "---|" * len({v for v, _ in groups}))
    for photo in dict.fromkeys(r["photo"] for r in rows):  # the smallest ε at which all four keep the target
        cells = []
        for variant in sorted({v for v, _ in groups}):
            ok = sorted(r["eps_grey"] for r in rows if r["photo"] == photo and r["variant"] == variant
                        and all(r[t]["top1"] for t in TRANSFORMS))
            tried = [r["eps_grey"] for r in rows if r["photo"] == photo and r["variant"] == variant]
            cells.append(f"{ok[0]:g}/255" if ok else (f"> {max(tried):g}/255" if tried else "–"))
        target = next(r["target_name"] for r in rows if r["photo"] == photo)
        print(f"| {photo} ({target}) | " + " | ".join(cells) + " |")
    if figure:
        from cnnlab.plots.attacks import survival_vs_eps
        from cnnlab.runs import save_figure

        curve: dict[str, dict[str, float]] = {}
        for (variant, eps), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            curve.setdefault(variant, {})[f"{eps:g}"] = sum(all(r[t]["top1"] for t in TRANSFORMS) for r in rs) / len(rs)
        save_figure(survival_vs_eps(curve), Path(figure))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="pgd,eot")
    ap.add_argument("--eps", default="1,2,4,8", help="in grey levels, comma-separated")
    ap.add_argument("--photos", default="", help="a subset by name (comma-separated); default all")
    ap.add_argument("--steps", type=int, default=None, help="step budget (default: the method's)")
    ap.add_argument("--loss", default="margin", choices=("margin", "logp"), help="eot's loss")
    ap.add_argument("--samples", type=int, default=None, help="eot: jittered views per step")
    ap.add_argument("--kappa", type=float, default=None, help="eot: margin cap")
    ap.add_argument("--decay", type=float, default=None, help="eot: final step size / first (1 = constant)")
    ap.add_argument("--variant", default="", help="label for the rows (default: the method)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", default="/tmp/devset.jsonl")
    ap.add_argument("--summary", nargs="+", default=None, help="print the table of results files and exit")
    ap.add_argument("--figure", default=None, help="with --summary: plot survival of all four against ε here")
    args = ap.parse_args()
    if args.summary:
        summary(args.summary, args.figure)
    else:
        run(args)


if __name__ == "__main__":
    main()
