"""Error nodes carry their share of the MLP output (recorded by attribution) in the server's views."""

from __future__ import annotations

from circuit_atlas.graph.graph import Graph


def test_view_error_nodes_carry_error_share(server, toy, toy_graph_file):
    shares = Graph.load(str(toy_graph_file)).metadata["error_share"]
    with server.client() as c:
        view = c.get(f"/api/graphs/{toy['id']}/view", params={"node_threshold": 1, "edge_threshold": 1}).json()
    errors = [n for n in view["nodes"] if n["kind"] == "error"]
    assert len(errors) == len(shares)
    for n in errors:
        assert abs(n["error_share"] - shares[f"{n['layer']}:{n['position']}"]) < 1e-6
    assert all("error_share" not in n for n in view["nodes"] if n["kind"] != "error")
