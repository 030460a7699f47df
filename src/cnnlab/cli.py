"""The command line, generated from each verb's option dataclass.

A verb is a module with ``Config`` (a dataclass of options), ``run(config) -> Result`` (the
typed Python API) and ``present(result) -> int`` (printing and the exit code). The table below
names the modules; a verb's module (and torch) is imported only when that verb runs, so
``cnnlab --help`` answers at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import types
import typing
from pathlib import Path
from typing import Any

from cnnlab import __version__

# verb -> (module, one-line description). Keep the order of the README.
VERBS: dict[str, tuple[str, str]] = {
    "models": ("cnnlab.models.listing", "list the model registry and which weights are available offline"),
    "predict": ("cnnlab.predict", "classify images with an ImageNet-pretrained CNN (top-k classes)"),
    "featuremaps": ("cnnlab.featuremaps.run", "show early, middle and late feature maps of an image"),
    "attack": ("cnnlab.attacks.run", "targeted adversarial examples (ascent, pgd, eot) within an L∞ budget"),
    "robustness": ("cnnlab.attacks.robustness", "do adversarial images survive a flip, crop, rotation, grayscale?"),
    "data": ("cnnlab.data.fetch", "download and verify data sets (cnnlab data fetch cifar10)"),
    "train": ("cnnlab.train", "train a CIFAR-10 network (hw-mish, hw-mish-bn, improved) with figures"),
    "train-seeds": ("cnnlab.train.seeds", "train one recipe with K seeds: mean ± standard deviation"),
    "bn-study": ("cnnlab.train.study", "hw-mish vs hw-mish-bn under one recipe, and a learning-rate sweep"),
    "compare": ("cnnlab.train.compare", "plot a metric of several training runs on the same axes"),
    "probe": ("cnnlab.probe.run", "linear probe: pretrained CNN features + logistic regression (Oxford-IIIT Pet, image folders)"),
    "batchnorm": ("cnnlab.batchnorm", "show numerically why layers followed by BatchNorm need no bias"),
    "report": ("cnnlab.report.build", "run every experiment and write the report (index.html + report.pdf)"),
    "demo": ("cnnlab.demo", "the main job on built-in defaults (what `make demo` runs)"),
}


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(inner type, is_list) for ``X``, ``X | None``, ``list[X]``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _unwrap(args[0])
    if origin in (list, tuple):
        return typing.get_args(tp)[0], True
    return tp, False


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one argument per field of dataclass ``cls`` (a field that is itself a dataclass: one per its field)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        inner, is_list = _unwrap(hints[f.name])
        if dataclasses.is_dataclass(inner):
            _add_group_arguments(parser, f.name, inner, meta.get("help", ""))
            continue
        kwargs: dict[str, Any] = {"help": meta.get("help", "")}
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if meta.get("choices"):
            kwargs["choices"] = list(meta["choices"])
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        if inner is bool and not is_list:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = meta.get("parse") or (Path if inner is Path else inner)
            if is_list:
                kwargs["nargs"] = "+" if required else "*"
        if not required:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            kwargs["default"] = default
            if "action" not in kwargs and kwargs["help"] and default not in (None, [], ()):
                kwargs["help"] += f" (default: {default})"
        if meta.get("positional"):
            if not required and not is_list:
                kwargs["nargs"] = "?"
            parser.add_argument(f.name, **kwargs)
        else:
            flag = "--" + f.name.replace("_", "-")
            if required:
                kwargs["required"] = True
            parser.add_argument(flag, dest=f.name, **kwargs)


def _add_group_arguments(parser: argparse.ArgumentParser, group: str, cls: type, group_help: str) -> None:
    """One flag per field of the option group ``cls``, unset unless given (the group's own defaults
    apply); :func:`config_options` gathers the given ones into a dict under ``group``."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("cli") is False:
            continue
        inner, _ = _unwrap(hints[f.name])
        kwargs: dict[str, Any] = {"help": f"{f.metadata.get('help', '')} ({group_help})", "default": None}
        if f.metadata.get("choices"):
            kwargs["choices"] = list(f.metadata["choices"])
        if inner is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs.update(type=inner, metavar=f.name.upper())
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f"{group}.{f.name}", **kwargs)


def config_options(ns: argparse.Namespace) -> dict[str, Any]:
    """The parsed arguments as a verb's ``Config`` keyword arguments (given group flags as one dict per group)."""
    options: dict[str, Any] = {}
    for name, value in vars(ns).items():
        group, dot, field_name = name.partition(".")
        if not dot:
            options[name] = value
        elif value is not None:
            options.setdefault(group, {})[field_name] = value
    return options


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnlab",
        description="cnnlab: a laboratory for convolutional networks.",
        epilog="Run `cnnlab VERB --help` for a verb's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", title="verbs")
    for name, (_, desc) in VERBS.items():
        verbs.add_parser(name, help=desc, add_help=False)
    return parser


def verb_parser(name: str) -> tuple[argparse.ArgumentParser, types.ModuleType]:
    module = importlib.import_module(VERBS[name][0])
    parser = argparse.ArgumentParser(
        prog=f"cnnlab {name}", description=(module.__doc__ or VERBS[name][1]).strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataclass_arguments(parser, module.Config)
    return parser, module


def os_error_line(exc: OSError) -> str:
    """One line for an ``OSError``: the path(s) it names, then the system's reason."""
    paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    reason = exc.strerror or str(exc)
    return f"{paths}: {reason}" if paths else reason


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in VERBS:
        # No verb (or --help/--version, or a typo): argparse answers without importing torch.
        _top_parser().parse_args(argv or ["--help"])
        return 2
    name, rest = argv[0], argv[1:]
    parser, module = verb_parser(name)
    ns = parser.parse_args(rest)

    from rich.markup import escape

    from cnnlab.errors import CnnlabError
    from cnnlab.progress import console, setup_logging

    setup_logging(quiet=getattr(ns, "quiet", False))
    try:
        config = module.Config(**config_options(ns))
        result = module.run(config)
        return int(module.present(result) or 0)
    except (CnnlabError, ValueError) as exc:
        console().print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True)
        return 2
    except OSError as exc:  # FileNotFoundError too; disk full, read-only folder, no permission
        console().print(f"[bold red]error:[/] {escape(os_error_line(exc))}", markup=True, highlight=False,
                        soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console().print("[yellow]interrupted[/]: finished files are kept; rerun to resume.", markup=True)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
