"""The validation search that chose the Muon recipes of hw-mish and hw-mish-bn (benchmarks/RESULTS.md,
"Half the epochs"). Ran on one GPU, every training a separate ``cnnlab train`` process, all at once.

Round 1: every candidate of ``ROUND1`` trains with 5,000 training images held out (seed 0); per model
the best validation accuracy (TTA) wins, ties to the first listed; the winners then train seeds 0
and 1 on all 50,000 images, and ``improved``'s recipe seeds 0-2. Round 2 (``--round 2``) is the
second hw-mish-bn search: each candidate of ``ROUND2`` trains on the validation split and with
seeds 0 and 1 on all 50,000 in one batch; the choice is still made on validation alone.
Round 3 (``--round 3``) shortens the chosen recipes (the defaults in ``RECIPES`` as they were then:
``ROUND34_DEFAULTS`` pins what round 4 has since changed): each schedule
length of ``ROUND3`` trains on the validation split and with seeds 0 and 1 on all 50,000 in one
batch. The rule, fixed before the runs: per model the fewest epochs whose validation accuracy (TTA,
seed 0) is at least ``TARGET + MARGIN`` (the issue's test target plus one point for the seed spread
and the validation/test gap); the seed runs only report the chosen length's test accuracy.
Round 4 (``--round 4``) is round 3 again for hw-mish-bn, whose 8-20 epochs all missed the bar (20:
85.92 %): the same rule over a wider grid, declared before any of its runs. The default recipe at 22
and 25 epochs completes round 3's grid; at 12, 15 and 20 epochs each candidate changes one thing
that commonly shortens schedules (the lookahead average, label smoothing 0.2, Muon's lr doubled,
translate 2, decay to 0). Among the candidates that clear the bar, the fewest epochs win, then the
higher validation accuracy. Only the validation runs train at first; the winner then trains seeds 0
and 1 on all 50,000 images (no test run is trained for a candidate that was not chosen).

``--only KEY ...`` runs a declared subset of a round's candidates (keys as in the grid, e.g.
``t2-e20``), and the rule then chooses among that subset; on a CPU, ``--threads`` splits the cores
between the runs that train at once.

Every finished run appends one JSON line (name, flags, result.json, history) to ``OUT/results.jsonl``.

Usage: python benchmarks/recipe_search.py DATA_ROOT RUNS_DIR --out OUT [--round 1|2|3|4] [--device cuda]
       [--budget SECONDS] [--only KEY ...] [--threads N] [--smoke]   (--smoke: 1 epoch on 400 images, 50 of them validating:
       a dry run on the CPU)
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import subprocess
import sys
import time
from pathlib import Path

MU = ["--optimizer", "muon"]
ROUND1 = {
    "hw-mish": {"sgd": [], "sgd-la": ["--lookahead"],
                "mu02": MU + ["--muon-lr", "0.02", "--muon-momentum", "0.9"],
                "mu05": MU + ["--muon-lr", "0.05", "--muon-momentum", "0.9"],
                "mu10": MU + ["--muon-lr", "0.1", "--muon-momentum", "0.9"],
                "mu05-la": MU + ["--muon-lr", "0.05", "--muon-momentum", "0.9", "--lookahead"]},
    "hw-mish-bn": {"sgd": [], "sgd-la": ["--lookahead"],
                   "mu24n": MU + ["--muon-lr", "0.24", "--muon-momentum", "0.6", "--muon-normalize"],
                   "mu10n": MU + ["--muon-lr", "0.1", "--muon-momentum", "0.9", "--muon-normalize"],
                   "mu24n-la": MU + ["--muon-lr", "0.24", "--muon-momentum", "0.6", "--muon-normalize", "--lookahead"]},
}
M9 = MU + ["--muon-momentum", "0.9"]
ROUND2 = {"hw-mish-bn": {"mu05la": M9 + ["--muon-lr", "0.05", "--lookahead"],
                         "mu05n": M9 + ["--muon-lr", "0.05", "--muon-normalize"],
                         "mu10nla": M9 + ["--muon-lr", "0.1", "--muon-normalize", "--lookahead"],
                         "mu10nt2": M9 + ["--muon-lr", "0.1", "--muon-normalize", "--translate", "2"],
                         "mu10": M9 + ["--muon-lr", "0.1"]}}
ROUND3 = {"hw-mish": {f"e{n}": ["--epochs", str(n)] for n in (6, 8, 10, 12, 15)},
          "hw-mish-bn": {f"e{n}": ["--epochs", str(n)] for n in (8, 10, 12, 15, 20)}}
ONE_CHANGE = {"la": ["--lookahead"], "ls2": ["--label-smoothing", "0.2"], "mu2": ["--muon-lr", "0.2"],
              "t2": ["--translate", "2"], "end0": ["--lr-end", "0"]}
ROUND4 = {"hw-mish-bn": {**{f"e{n}": ["--epochs", str(n)] for n in (22, 25)},
                         **{f"{k}-e{n}": ["--epochs", str(n), *f] for n in (12, 15, 20) for k, f in ONE_CHANGE.items()}}}
TARGET, MARGIN = {"hw-mish": 0.81, "hw-mish-bn": 0.85}, 0.01
EPOCHS = {"hw-mish": 22, "hw-mish-bn": 30, "improved": 8}
# The candidate flags are given against the SGD recipes the search started from.
BASE = {"hw-mish": ["--optimizer", "sgd", "--no-lookahead"], "hw-mish-bn": ["--optimizer", "sgd"], "improved": []}
# hw-mish-bn's default before round 4 chose translate 2 (candidates still override it).
ROUND34_DEFAULTS = {"hw-mish-bn": ["--translate", "4"]}
IMPROVED = MU + ["--muon-lr", "0.24", "--muon-momentum", "0.6", "--muon-normalize", "--batch-size", "2000",
                 "--warmup", "0", "--lr-end", "0", "--no-lookahead"]


def base_flags(round_: int, model: str) -> list[str]:
    """What a candidate's flags change: rounds 1-2 the SGD recipes; rounds 3-4 the defaults of the
    day they ran, pinned where round 4 has since changed them (so a rerun trains the same runs)."""
    if round_ >= 3:
        return list(ROUND34_DEFAULTS.get(model, []))
    return ["--epochs", str(EPOCHS[model]), *BASE[model]]


def train(args, name: str, model: str, flags: list[str], seed: int, val: int) -> dict:
    """One ``cnnlab train`` process; its result as a JSON line in ``args.out/results.jsonl``."""
    out = args.runs / name
    base = base_flags(args.round, model)
    threads = ["--threads", str(args.threads)] if args.threads else []
    smoke = ["--no-verify-md5", "--limit-test", "60", "--limit-train", "400", "--epochs", "1"] if args.smoke else []
    cmd = [sys.executable, "-m", "cnnlab", "train", "--model", model, "--device", args.device, "--data-root",
           str(args.data_root), "--seed", str(seed), "--val-split", str(val), "--out", str(out), *threads, *base, *flags, *smoke]
    t = time.time()
    with open(args.runs / f"{name}.log", "w") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, CNNLAB_NO_PROGRESS="1"))
    rec = dict(name=name, model=model, flags=flags, seed=seed, val_split=val, rc=rc, wall=round(time.time() - t, 1))
    if (out / "result.json").exists():
        rec["result"] = json.loads((out / "result.json").read_text())
        rec["history"] = json.loads((out / "history.json").read_text())
    with open(args.out / "results.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(f"{name}: rc {rc}, validation {rec.get('result', {}).get('val_accuracy')}, "
          f"test {rec.get('result', {}).get('test_accuracy')}", flush=True)
    return rec


def parallel(args, jobs: list[tuple]) -> list[dict]:
    with cf.ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(lambda job: train(args, *job), jobs))


def validated(records: list[dict], model: str) -> list[dict]:
    """``model``'s finished validation runs (the seed runs on all 50,000 images never choose)."""
    return [r for r in records if r["model"] == model and "result" in r and r["val_split"]]


def choose(records: list[dict], grid: dict) -> dict[str, list[str]]:
    """Per model, the flags with the best validation accuracy (the first listed on a tie)."""
    chosen = {}
    for model in grid:
        done = validated(records, model)
        if done:
            best = max(done, key=lambda r: r["result"]["val_accuracy"])
            chosen[model] = best["flags"]
            print(f"chosen for {model}: {best['name']} ({best['result']['val_accuracy']:.2%} validation)", flush=True)
    return chosen


def epochs_of(flags: list[str]) -> int:
    """The ``--epochs`` value among a candidate's flags."""
    return int(flags[flags.index("--epochs") + 1])


def shortest(records: list[dict], grid: dict) -> dict[str, list[str]]:
    """Per model, the candidate with the fewest epochs whose validation accuracy reaches the target
    plus the margin; among equally short ones, the higher validation accuracy."""
    chosen = {}
    for model, candidates in grid.items():
        val = {r["name"]: r["result"]["val_accuracy"] for r in validated(records, model)}
        passed = [key for key in candidates if val.get(f"val-{model}-{key}", -1) >= TARGET[model] + MARGIN]
        if passed:
            key = min(passed, key=lambda k: (epochs_of(candidates[k]), -val[f"val-{model}-{k}"]))
            chosen[model] = candidates[key]
            print(f"chosen for {model}: {key} ({val[f'val-{model}-{key}']:.2%} validation)", flush=True)
    return chosen


def subset(grid: dict, only: list[str] | None) -> dict:
    """The grid restricted to the candidate keys in ``only`` (all of it when None)."""
    if only is None:
        return grid
    unknown = set(only) - {k for g in grid.values() for k in g}
    if unknown:
        raise SystemExit(f"--only: no candidate {', '.join(sorted(unknown))} in this round")
    return {m: {k: f for k, f in g.items() if k in only} for m, g in grid.items() if set(g) & set(only)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_root", type=Path)
    ap.add_argument("runs", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--round", type=int, choices=(1, 2, 3, 4), default=1)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--budget", type=float, default=480, help="seconds: round 1's seed runs start only with 150 left")
    ap.add_argument("--only", nargs="+", metavar="KEY", help="run only these candidates of the round's grid")
    ap.add_argument("--threads", type=int, help="CPU threads per training (cnnlab train --threads)")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    grid = subset({1: ROUND1, 2: ROUND2, 3: ROUND3, 4: ROUND4}[args.round], args.only)
    args.runs.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    t0, val = time.time(), 50 if args.smoke else 5000
    jobs = [(f"val-{m}-{k}", m, f, 0, val) for m, g in grid.items() for k, f in g.items()]
    if args.round in (2, 3):  # the seeds on all 50,000 train beside the validation runs
        jobs += [(f"test-{m}-{k}-s{s}", m, f, s, 0) for m, g in grid.items() for k, f in g.items() for s in (0, 1)]
    records = parallel(args, jobs)
    chosen = shortest(records, grid) if args.round >= 3 else choose(records, grid)
    (args.out / "chosen.json").write_text(json.dumps(chosen, indent=1))
    if args.round in (1, 4) and chosen and args.budget - (time.time() - t0) > 150:
        jobs = [(f"test-{m}-s{s}", m, f, s, 0) for m, f in chosen.items() for s in (0, 1)]
        extra = [(f"test-improved-s{s}", "improved", IMPROVED, s, 0) for s in (0, 1, 2)] if args.round == 1 else []
        parallel(args, jobs + extra)


if __name__ == "__main__":
    main()
