"""Feature dashboards: top activations, histograms, logit effects and labels for any transcoder set.

    from circuit_atlas.features.dashboards import BuildConfig, build_dashboards, load_dashboard
    build_dashboards("toyworld", "toyworld-clt", "corpus.txt", "dash/")
    load_dashboard("dash/", 1, 42).show()

See build.py (the streaming pass), stats.py (the running structures), store.py (the file format).
"""

from .build import BuildResult, build_dashboards
from .config import BuildConfig
from .dashboard import Band, Example, FeatureDashboard
from .labels import read_labels, set_label
from .reader import feature_labels, find_dashboards, graph_labels, load_dashboard
from .store import Dashboards, open_dashboards

__all__ = ["BuildConfig", "BuildResult", "build_dashboards", "Band", "Example", "FeatureDashboard", "Dashboards",
           "open_dashboards", "load_dashboard", "find_dashboards", "feature_labels", "graph_labels", "read_labels", "set_label"]  # fmt: skip
