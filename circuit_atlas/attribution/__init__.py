"""Turning a model and a prompt into an attribution graph."""
