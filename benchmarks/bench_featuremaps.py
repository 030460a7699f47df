"""The report's feature-map section with its image set: cold cache, warm cache, and the photo alone.

Issue 21's budget: the whole feature-map section (``cnnlab report --sections featuremaps``, quick
profile: Oxford-IIIT Pet under the data root, at most 20 images per class (the default), plus the
built-in photos, top 8 images per channel, channels chosen by selectivity) in at most 60 s on a 2-core CPU with a cold activation cache.
In one process, this script times

* **cold**: the section in a fresh report folder (its activation cache is empty);
* **warm**: the section again with ``--force`` (the experiment reruns; the activations come from
  the cache);
* **photo only** (the baseline): ``cnnlab featuremaps`` on the same photo with ``--top-k 0``,
  which is what the section computed before it had an image set.

Each line gives the wall time, the process's CPU time (user + system, all threads: on an idle
2-core machine the wall time is at least half of it, so it is the number to compare across
loads) and the 1-minute load average before and after (the development machine is shared).

Usage: python benchmarks/bench_featuremaps.py --data-root ../shared/data [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(label: str, fn) -> dict:
    load0, cpu0, t0 = os.getloadavg()[0], _cpu(), time.perf_counter()
    extra = fn() or {}
    wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
    row = {"run": label, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "load_before": load0,
           "load_after": os.getloadavg()[0], **extra}
    print(json.dumps(row), flush=True)
    return row


def section(out: Path, data_root: str, force: bool) -> dict:
    from cnnlab.report import build
    from cnnlab.runs import read_json

    result = build.run(build.Config(profile="quick", sections=["featuremaps"], out=out, data_root=Path(data_root),
                                    pdf=False, force=force, quiet=True))
    sec = next(s for s in result.sections if s.id == "featuremaps")
    assert sec.status == "ok", sec.note
    run_dir = out / sec.runs[0]["run_dir"]
    iset = read_json(run_dir / "featuremaps.json")["image_set"]
    return {"section_s": round(sec.seconds, 1), "activations": iset["cache"], "images": iset["images"],
            "extraction_s": round(iset["seconds"], 1), "images_per_second": iset["images_per_second"]}


def photo_only(out: Path, data_root: str) -> dict:
    from cnnlab.featuremaps import run as fm

    fm.run(fm.Config(image=Path(data_root) / "peppers.png", out=out, top_k=0, quiet=True))
    return {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--out", default=None, help="write the rows as JSON here too")
    args = ap.parse_args()
    os.environ.setdefault("CNNLAB_NO_PROGRESS", "1")
    bf16 = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, AVX512-BF16: {bf16}, "
          f"torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [timed("photo only (baseline)", lambda: photo_only(Path(tmp) / "photo", args.data_root)),
                timed("section, cold cache", lambda: section(Path(tmp) / "report", args.data_root, False)),
                timed("section, warm cache", lambda: section(Path(tmp) / "report", args.data_root, True))]
    base = rows[0]
    for r in rows[1:]:
        print(f"{r['run']}: {r['wall_s']} s wall ({r['wall_s'] / base['wall_s']:.1f}x the photo alone), "
              f"{r['cpu_s']} s CPU ({r['cpu_s'] / base['cpu_s']:.1f}x)")
    if args.out:
        Path(args.out).write_text(json.dumps({"bf16_cpu": bf16, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
