"""Where the project's shared reference material lives: `../shared/` beside the repository
(as CI lays it out), or wherever CIRCUIT_ATLAS_SHARED points."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CIRCUIT_ATLAS_SHARED", REPO.parent / "shared"))
REAL_GRAPHS = SHARED / "real_graphs"
if not REAL_GRAPHS.is_dir():
    raise FileNotFoundError(
        f"the shared reference files are not at {SHARED}; clone the repository beside `shared/` "
        "or set CIRCUIT_ATLAS_SHARED to that folder"
    )
