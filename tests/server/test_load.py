"""Load: 20 concurrent clients x 50 label edits on one graph (each client edits every one of 50 nodes once)
against the real server, on SQLite and PostgreSQL. Every edit must be in the history and each node's current
label one of its 20 edits. (Throughput and latency figures: bench/server_load.py -> bench/SERVER_LOAD.md.)"""

from __future__ import annotations

import random
import threading

CLIENTS, NODES = 20, 50


def test_twenty_clients_fifty_edits_each(server, toy):
    gid = toy["id"]
    with server.client() as c:
        nodes = [n["id"] for n in c.get(f"/api/graphs/{gid}/view", params={"node_threshold": 1, "edge_threshold": 1})
                 .json()["nodes"] if n["kind"] == "feature"][:NODES]  # fmt: skip
    assert len(nodes) == NODES
    failures: list[str] = []
    barrier = threading.Barrier(CLIENTS)

    def client(k: int) -> None:
        order = nodes[:]
        random.Random(k).shuffle(order)
        with server.client() as c:
            barrier.wait()
            for node in order:
                r = c.put(f"/api/graphs/{gid}/labels/{node}", json={"text": f"client {k}: {node}", "client": f"c{k}"})
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    with server.client() as c:
        current = c.get(f"/api/graphs/{gid}/labels").json()
        total = 0
        for node in nodes:
            history = c.get(f"/api/graphs/{gid}/labels/{node}/history").json()
            mine = [h for h in history if h["scope"] == "node"]
            texts = {h["text"] for h in mine}
            assert texts == {f"client {k}: {node}" for k in range(CLIENTS)}, node
            assert current[node]["text"] in texts
            assert current[node]["version"] == max(h["version"] for h in mine)
            total += len(mine)
        assert total == CLIENTS * NODES
