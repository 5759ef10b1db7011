"""Settings of one attribution run.

One dataclass; every field has a one-line docstring that `circuit-atlas trace --help` shows
(cli.py generates the trace options from these fields), and `__post_init__` rejects an impossible
setting with one ValueError naming the field. `attribute(model, prompt, **config.attribute_kwargs())`
runs with these settings; `attribute()`'s own keywords stay the plain API.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import textwrap
from dataclasses import dataclass
from functools import cache

# The default memory budget: a laptop with 16 GB of RAM runs the OS, a browser and Python beside us.
DEFAULT_MEMORY_BUDGET_GB = 8.0


@dataclass
class AttributionConfig:
    max_n_logits: int = 10
    """Most logit targets when explaining the top tokens (salient mode)."""

    desired_logit_prob: float = 0.95
    """Take the most probable tokens as targets until their probability mass reaches this, in (0, 1]."""

    max_feature_nodes: int | None = None
    """Compute rows for at most this many features, the most influential; the rest stay as source-only nodes [all]."""

    batch_size: int = 256
    """Target rows per backward batch (memory grows with it)."""

    update_interval: int = 4
    """Under --max-feature-nodes: re-rank features by influence every this many batches."""

    edge_budget: float | None = None
    """Drop edges with |a| below this fraction of their row's absolute mass, in (0, 1) [None: exact, keep all]."""

    edge_dir: str | None = None
    """Keep the edges in memory-mapped files in this folder instead of RAM (graphs larger than memory) [None]."""

    memory_budget_gb: float | None = None
    """Refuse to start when the estimated peak memory exceeds this many GB [min(8, 80 % of available RAM)]."""

    def __post_init__(self) -> None:
        if not isinstance(self.max_n_logits, int) or self.max_n_logits < 1:
            raise ValueError(f"max_n_logits must be an integer >= 1, got {self.max_n_logits!r}")
        if not 0 < self.desired_logit_prob <= 1:
            raise ValueError(f"desired_logit_prob must be in (0, 1], got {self.desired_logit_prob!r}")
        if self.max_feature_nodes is not None and (
            not isinstance(self.max_feature_nodes, int) or self.max_feature_nodes < 0
        ):
            raise ValueError(
                f"max_feature_nodes must be an integer >= 0 (or None for all features), got {self.max_feature_nodes!r}"
            )
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not isinstance(self.update_interval, int) or self.update_interval < 1:
            raise ValueError(f"update_interval must be an integer >= 1, got {self.update_interval!r}")
        if self.edge_budget is not None:
            from ..graph.edge_store import check_edge_budget

            check_edge_budget(self.edge_budget)
        if self.memory_budget_gb is not None and not self.memory_budget_gb > 0:
            raise ValueError(
                f"memory_budget_gb must be > 0 GB (or None for the default), got {self.memory_budget_gb!r}"
            )

    def attribute_kwargs(self) -> dict:
        """The keywords of `attribute()` (memory_budget_gb is read by the estimator, see estimate.py)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "memory_budget_gb"}


@cache
def field_docs() -> dict[str, str]:
    """The docstring under each AttributionConfig field, read from the source (they are the CLI help)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(AttributionConfig)))
    docs = {}
    for node, nxt in itertools.pairwise(tree.body[0].body):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = str(nxt.value.value)
    return docs
