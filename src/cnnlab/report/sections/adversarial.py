"""Section: adversarial examples (``cnnlab attack`` and ``cnnlab robustness``)."""

from __future__ import annotations

from cnnlab.report.section import Context, Section

ID = "adversarial"
TITLE = "Adversarial examples"
SOURCES = ("cnnlab.attacks.base", "cnnlab.attacks.ascent", "cnnlab.attacks.pgd", "cnnlab.attacks.eot")


def build(ctx: Context) -> Section:
    import cnnlab.attacks.run  # noqa: F401  (not wired yet)

    raise NotImplementedError("adversarial section not wired yet")
