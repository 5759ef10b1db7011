"""Where the project's shared reference material lives: `../shared/` beside the repository."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REAL_GRAPHS = SHARED / "real_graphs"
