"""Section: transfer learning with a linear probe on pretrained features (``cnnlab probe``)."""

from __future__ import annotations

from cnnlab.report.section import Context, Section

ID = "transfer"
TITLE = "Transfer learning: a linear probe on pretrained features"
SOURCES = ("cnnlab.probe.run", "cnnlab.probe.extract", "cnnlab.probe.classify")


def build(ctx: Context) -> Section:
    import cnnlab.probe.run  # noqa: F401  (not wired yet)

    raise NotImplementedError("transfer section not wired yet")
