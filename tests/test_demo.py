"""The README's first command: `circuit-atlas demo` on whatever this installation ships."""

import subprocess
import sys


def test_demo_runs_end_to_end(tmp_path):
    r = subprocess.run([sys.executable, "-m", "circuit_atlas", "demo", "--out-dir", str(tmp_path), "--no-serve"],
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "top logits:" in r.stdout and "most influential nodes:" in r.stdout
    assert (tmp_path / "graph.safetensors").is_file()
    assert (tmp_path / "graphs" / "demo-two-hop.json").is_file()
    assert "graph library:" in r.stdout and (tmp_path / "server-data" / "circuit-atlas.sqlite").is_file()
    # the node summary labels features from the shipped dashboards
    from circuit_atlas.features.dashboards import feature_labels

    labels = feature_labels("toyworld-clt")
    lines = [ln for ln in r.stdout.splitlines() if ln.strip().startswith("feat:")]
    assert lines
    for ln in lines:
        _, layer, _, index = ln.split()[0].split(":")
        assert f"[{labels[(int(layer), int(index))]}]" in ln
