"""Two trainings on one CPU: one after the other with every core each, or both at once with the
cores split between them. Measures whether the report's independent CIFAR-10 runs (the BatchNorm
study's sweep, say) would finish sooner side by side.

Each round runs both arrangements (the order alternating between rounds), every training a fresh
``cnnlab train`` process of ``--epochs`` epochs on ``--images`` training images with TTA off and
``--limit-test`` test images. Reported per round: the wall time of each arrangement and their
ratio (sequential / concurrent: above 1 means side by side is faster), then the median ratio.

Usage: python benchmarks/bench_concurrent.py DATA_ROOT [--model hw-mish] [--images 10000]
       [--epochs 1] [--limit-test 1000] [--cores 2] [--rounds 2] [--out DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def train_cmd(args, out: Path, threads: int) -> list[str]:
    return [sys.executable, "-m", "cnnlab", "train", "--model", args.model, "--device", "cpu",
            "--data-root", str(args.data_root), "--epochs", str(args.epochs), "--no-tta",
            "--limit-train", str(args.images), "--limit-test", str(args.limit_test),
            "--threads", str(threads), "--out", str(out)]


def arrangement(args, root: Path, concurrent: bool) -> float:
    """Wall seconds for two trainings, side by side (cores split) or one after the other."""
    threads = args.cores // 2 if concurrent else args.cores
    cmds = [train_cmd(args, root / f"{'con' if concurrent else 'seq'}-{i}", threads) for i in (0, 1)]
    env = dict(os.environ, CNNLAB_NO_PROGRESS="1")
    start = time.perf_counter()
    if concurrent:
        procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, env=env) for c in cmds]
        codes = [p.wait() for p in procs]
    else:
        codes = [subprocess.call(c, stdout=subprocess.DEVNULL, env=env) for c in cmds]
    if any(codes):
        raise SystemExit(f"a training failed (exit codes {codes}); run one by hand to see why")
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_root", type=Path)
    ap.add_argument("--model", default="hw-mish")
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--limit-test", type=int, default=1000)
    ap.add_argument("--cores", type=int, default=2, help="cores in all (an even number)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, help="run folders (default: a temporary folder)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.cores < 2 or args.cores % 2:
        ap.error("--cores must be an even number, at least 2")
    root = args.out or Path(tempfile.mkdtemp(prefix="bench_concurrent-"))
    rows = []
    for r in range(args.rounds):
        order = (False, True) if r % 2 == 0 else (True, False)
        secs = {c: arrangement(args, root / f"round{r}", c) for c in order}
        rows.append({"round": r, "sequential_s": secs[False], "concurrent_s": secs[True],
                     "ratio": secs[False] / secs[True]})
        print(f"round {r}: sequential {secs[False]:.1f} s, concurrent {secs[True]:.1f} s, "
              f"ratio {rows[-1]['ratio']:.3f}", flush=True)
    median = statistics.median(row["ratio"] for row in rows)
    print(f"median ratio sequential / concurrent: {median:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "rounds": rows, "median_ratio": median}, indent=1))


if __name__ == "__main__":
    main()
