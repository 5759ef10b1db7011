"""The graph server: a self-hosted library of attribution graphs (FastAPI + SQLAlchemy), see notes/api.md."""
