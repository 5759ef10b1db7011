"""Per-architecture forward, frozen (linearised) model and weight layout."""
