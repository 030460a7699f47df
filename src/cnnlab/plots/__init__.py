"""Pure plotting functions: data in, matplotlib ``Figure`` out; saving is the caller's job."""

import matplotlib

matplotlib.use("Agg")  # no screen needed; the report and tests render off-screen
