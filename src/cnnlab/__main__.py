"""``python -m cnnlab`` (also what ``torchrun -m cnnlab`` starts)."""

import sys

from cnnlab.cli import main

sys.exit(main())
