"""Compare training runs: one metric per epoch for several `cnnlab train` runs on the same axes.

Writes compare.png (and compare.json with the plotted numbers) into a run folder.

Example: cnnlab compare runs/train/hw-mish runs/train/hw-mish-bn --metric train_loss
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.options import arg
from cnnlab.runs import new_run_dir, read_json, save_figure, write_json

METRICS = ("train_loss", "test_loss", "train_accuracy", "test_accuracy")


@dataclass(kw_only=True)
class Config:
    runs: list[Path] = arg(help="run folders of `cnnlab train`", positional=True, metavar="RUN")
    metric: str = arg("train_loss", "what to plot", choices=METRICS)
    labels: list[str] | None = arg(None, "legend labels (default: each run's model name)")
    out: Path | None = arg(None, "run folder (default: runs/compare/<time>-<id>/)")
    quiet: bool = arg(False, "only print results and errors")

    def __post_init__(self) -> None:
        if not self.runs:
            raise ValueError("give at least one run folder")
        if self.metric not in METRICS:
            raise ValueError(f"--metric must be one of {', '.join(METRICS)}")
        self.runs = [Path(r) for r in self.runs]
        if self.labels and len(self.labels) != len(self.runs):
            raise ValueError(f"{len(self.labels)} labels for {len(self.runs)} runs")


@dataclass
class Result:
    run_dir: Path
    figure: Path
    final: dict[str, float]  # label -> the metric at the last epoch


def load_histories(runs: list[Path], labels: list[str] | None = None) -> dict[str, list[dict]]:
    """label -> history of each run folder (a clear error for folders that are not runs)."""
    out: dict[str, list[dict]] = {}
    for i, run in enumerate(runs):
        if not (run / "history.json").is_file():
            raise CnnlabError(f"{run} has no history.json: give folders written by `cnnlab train`")
        label = labels[i] if labels else read_json(run / "config.json").get("model", run.name)
        if label in out:
            label = f"{label} ({run.name})"
        out[label] = read_json(run / "history.json")
    return out


def run(config: Config) -> Result:
    from cnnlab.plots.training import plot_comparison

    histories = load_histories(config.runs, config.labels)
    run_dir = new_run_dir("compare", config.out)
    fig = save_figure(plot_comparison(histories, config.metric, title=" vs ".join(histories)), run_dir / "compare.png")
    write_json(run_dir / "compare.json", {"metric": config.metric, "runs": [str(r) for r in config.runs],
                                          "histories": histories})
    return Result(run_dir, fig, {k: h[-1][config.metric] for k, h in histories.items() if h})


def present(result: Result) -> int:
    for label, value in result.final.items():
        print(f"{label}: {value:.4f} at the last epoch")
    print(f"figure: {result.figure}")
    return 0
