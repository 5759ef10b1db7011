"""Initial schema: graphs, their features, labels, states, saved views.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
BigId = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "graphs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("model", sa.String(512), nullable=False),
        sa.Column("transcoders", sa.String(512), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("n_nodes", sa.Integer, nullable=False),
        sa.Column("n_links", sa.BigInteger, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("meta", sa.JSON, nullable=False),
        sa.Column("search", sa.Text, nullable=False),
    )
    op.create_table(
        "graph_features",
        sa.Column("graph_id", sa.String(32), sa.ForeignKey("graphs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("layer", sa.Integer, primary_key=True),
        sa.Column("feature", sa.BigInteger, primary_key=True),
    )
    op.create_index("ix_graph_features_lf", "graph_features", ["layer", "feature"])
    op.create_table(
        "labels",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("scope", sa.String(8), nullable=False),
        sa.Column("scope_key", sa.String(512), nullable=False),
        sa.Column("node_key", sa.String(256), nullable=False),
        sa.Column("graph_id", sa.String(32), nullable=True),
        sa.Column("node_id", sa.String(256), nullable=True),
        sa.Column("text", sa.Text, nullable=True),
        sa.Column("client", sa.String(128), nullable=True),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_index("ix_labels_key", "labels", ["scope", "scope_key", "node_key", "id"])
    op.create_index("ix_labels_graph", "labels", ["graph_id"])
    op.create_table(
        "states",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("graph_id", sa.String(32), sa.ForeignKey("graphs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("client", sa.String(128), nullable=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.UniqueConstraint("graph_id", "version", name="uq_states_graph_version"),
    )
    op.create_table(
        "views",
        sa.Column("code", sa.String(16), primary_key=True),
        sa.Column("graph_id", sa.String(32), sa.ForeignKey("graphs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
    )
