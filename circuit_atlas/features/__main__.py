"""`python -m circuit_atlas.features build ...` (the torchrun entry point; see dashboards/cli.py)."""

import sys

from .dashboards.cli import main

sys.exit(main())
