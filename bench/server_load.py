"""Graph server load benchmark against a real `circuit-atlas serve` process.

    python bench/server_load.py [--db sqlite postgres] [--pg URL] [--clients 20] [--nodes 50] [--view-requests 400]

1. Label storm: `clients` threads each edit every one of `nodes` feature labels of one toy-world graph once
   (shuffled order), all at once. Checks that every edit is in the history afterwards and that each node's
   current label is one of its edits. Reports edits/s and p50/p95 latency.
2. View queries on a synthetic 10,000-node graph (8 layers x 24 positions, ~2,000 computed rows, ~400k edges):
   pruned views at a few thresholds, top-k edges of random nodes, subgraphs of 20 pinned nodes with a supernode,
   from 8 concurrent clients. Reports requests/s and p50/p95 latency per kind (first, uncached pruning separately).

Writes bench/SERVER_LOAD.md (figures) and prints the same. PostgreSQL: --pg or CIRCUIT_ATLAS_TEST_PG (a fresh
database is created on that server and dropped afterwards).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PROMPT = "The capital of the state containing Dallas is"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data: Path, db: str | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "circuit_atlas", "serve", "--data", str(data), "--port", str(port), "--no-browser"]
    if db:
        cmd += ["--db", db]
    log = open(data.parent / "server.log", "ab")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/api/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start; see " + str(data.parent / "server.log"))


def fresh_postgres(base: str):
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"ca_bench_{secrets.token_hex(4)}"
    admin = create_engine(make_url(base), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop():
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    return make_url(base).set(database=name).render_as_string(hide_password=False), drop


def synthetic_graph(n_layers: int = 8, n_pos: int = 24, n_features: int = 9_780, n_rows: int = 2_000,
                    fan_in: int = 200, n_logits: int = 5, seed: int = 0):  # fmt: skip
    """A random attribution graph with 10,000 nodes (features, errors, embeddings, logits) and sparse rows."""
    from circuit_atlas.graph.graph import EMBEDDING, ERROR, FEATURE, LOGIT, Graph

    g = torch.Generator().manual_seed(seed)
    f_layer = torch.randint(0, n_layers, (n_features,), generator=g)
    f_pos = torch.randint(1, n_pos, (n_features,), generator=g)
    f_idx = torch.randperm(50_000, generator=g)[:n_features]
    order = torch.argsort(f_layer * 10**9 + f_pos * 10**6 + f_idx)
    f_layer, f_pos, f_idx = f_layer[order], f_pos[order], f_idx[order]
    e_layer = torch.arange(n_layers).repeat_interleave(n_pos - 1)
    e_pos = torch.arange(1, n_pos).repeat(n_layers)
    kind = torch.cat([torch.full((n_features,), FEATURE), torch.full((e_layer.numel(),), ERROR),
                      torch.full((n_pos,), EMBEDDING), torch.full((n_logits,), LOGIT)]).to(torch.int8)  # fmt: skip
    layer = torch.cat([f_layer, e_layer, torch.full((n_pos,), -1), torch.full((n_logits,), n_layers)])
    position = torch.cat([f_pos, e_pos, torch.arange(n_pos), torch.full((n_logits,), n_pos - 1)])
    feature = torch.cat([f_idx, torch.full((e_layer.numel(),), -1), torch.arange(n_pos), torch.arange(n_logits)])
    n = kind.numel()
    n_sources = n - n_logits
    activation = torch.cat([torch.rand(n_features, generator=g) * 5, torch.zeros(n - n_features - n_logits),
                            torch.softmax(torch.randn(n_logits, generator=g), 0)])  # fmt: skip
    feature_rows = torch.randperm(n_features, generator=g)[: n_rows - n_logits].sort().values
    row_nodes = torch.cat([feature_rows, torch.arange(n - n_logits, n)])
    edges = torch.zeros(row_nodes.numel(), n_sources)
    src_layer = layer[:n_sources].clone()
    src_layer[kind[:n_sources] == EMBEDDING] = -1
    for r, t in enumerate(row_nodes.tolist()):
        lower = (src_layer < layer[t]).nonzero().squeeze(1)
        pick = lower[torch.randint(0, lower.numel(), (fan_in,), generator=g)]
        edges[r, pick] = torch.randn(fan_in, generator=g)
    return Graph(prompt="synthetic " * 3, input_ids=torch.arange(n_pos), tokens=[f"t{i}" for i in range(n_pos)],
                 n_layers=n_layers, kind=kind, layer=layer, position=position, feature=feature, activation=activation,
                 edges=edges, row_nodes=row_nodes, logit_labels=[f"L{i}" for i in range(n_logits)],
                 metadata={"scan": "synthetic-10k"})  # fmt: skip


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def label_storm(url: str, gid: str, nodes: list[str], n_clients: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(n_clients)

    def client(c: int) -> None:
        order = nodes[:]
        random.Random(c).shuffle(order)
        with httpx.Client(base_url=url, timeout=120) as h:
            barrier.wait()
            for node in order:
                t0 = time.perf_counter()
                r = h.put(f"/api/graphs/{gid}/labels/{node}", json={"text": f"client {c} on {node}", "client": f"c{c}"})
                dt_ = time.perf_counter() - t0
                with lock:
                    latencies.append(dt_)
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=client, args=(c,)) for c in range(n_clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    with httpx.Client(base_url=url, timeout=120) as h:
        current = h.get(f"/api/graphs/{gid}/labels").json()
        ok = True
        for node in nodes:
            history = [e for e in h.get(f"/api/graphs/{gid}/labels/{node}/history").json() if e["scope"] == "node"]
            texts = {e["text"] for e in history}
            want = {f"client {c} on {node}" for c in range(n_clients)}
            ok &= texts == want and len(history) == n_clients and current[node]["text"] in want
    return {"edits": len(latencies), "errors": errors, "wall": wall, "rps": len(latencies) / wall,
            "p50": pct(latencies, 0.5), "p95": pct(latencies, 0.95), "verified": ok}  # fmt: skip


def view_bench(url: str, gid: str, n_requests: int, n_clients: int = 8) -> dict:
    with httpx.Client(base_url=url, timeout=300) as h:
        t0 = time.perf_counter()
        first = h.get(f"/api/graphs/{gid}/view", params={"node_threshold": 0.8, "edge_threshold": 0.98}).json()
        cold = time.perf_counter() - t0
        ids = [n["id"] for n in first["nodes"]]
    thresholds = [(0.8, 0.98), (0.6, 0.9), (0.9, 0.99), (0.5, 0.95)]
    with httpx.Client(base_url=url, timeout=300) as h:  # warm the four prunings once
        for nt, et in thresholds:
            h.get(f"/api/graphs/{gid}/view", params={"node_threshold": nt, "edge_threshold": et})
    kinds = {"view": [], "edges": [], "subgraph": []}
    lock = threading.Lock()

    def client(c: int) -> None:
        rnd = random.Random(c)
        with httpx.Client(base_url=url, timeout=300) as h:
            for i in range(n_requests // n_clients):
                kind = ("view", "edges", "subgraph")[i % 3]
                t0 = time.perf_counter()
                if kind == "view":
                    nt, et = rnd.choice(thresholds)
                    r = h.get(f"/api/graphs/{gid}/view", params={"node_threshold": nt, "edge_threshold": et})
                elif kind == "edges":
                    r = h.get(f"/api/graphs/{gid}/nodes/{rnd.choice(ids)}/edges",
                              params={"direction": rnd.choice(["in", "out"]), "k": 50})  # fmt: skip
                else:
                    pinned = rnd.sample(ids, 20)
                    r = h.post(f"/api/graphs/{gid}/subgraph", json={"pinned": pinned,
                                                                    "supernodes": [["g", *pinned[:5]]]})  # fmt: skip
                assert r.status_code == 200, r.text
                with lock:
                    kinds[kind].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(n_clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    total = sum(len(v) for v in kinds.values())
    out = {"cold_first_view": cold, "view_nodes": len(first["nodes"]), "view_links": len(first["links"]),
           "rps": total / wall, "requests": total, "clients": n_clients}  # fmt: skip
    for kind, lat in kinds.items():
        out[kind] = {"n": len(lat), "p50": pct(lat, 0.5), "p95": pct(lat, 0.95)}
    return out


def run_backend(kind: str, pg: str | None, args) -> dict:
    from circuit_atlas import attribute
    from circuit_atlas.replacement_model import ReplacementModel

    db, drop = (None, lambda: None) if kind == "sqlite" else fresh_postgres(pg)
    tmp = Path(tempfile.mkdtemp(prefix=f"ca-bench-{kind}-"))
    proc, url = start_server(tmp / "data", db)
    try:
        model = ReplacementModel.from_pretrained("toyworld", "toyworld-clt")
        toy = tmp / "toy.safetensors"
        attribute(model, PROMPT, progress=False).save(str(toy))
        big = tmp / "synthetic-10k.safetensors"
        synthetic_graph().save(str(big))
        with httpx.Client(base_url=url, timeout=600) as h:
            gid = h.post("/api/graphs", files={"file": (toy.name, toy.read_bytes())}).json()["id"]
            nodes = [n["id"] for n in h.get(f"/api/graphs/{gid}/view", params={"node_threshold": 1, "edge_threshold": 1})
                     .json()["nodes"] if n["kind"] == "feature"][: args.nodes]  # fmt: skip
            t0 = time.perf_counter()
            r = h.post("/api/graphs", files={"file": (big.name, big.read_bytes())})
            import_s = time.perf_counter() - t0
            assert r.status_code == 201, r.text
            big_id, big_nodes, big_links = r.json()["id"], r.json()["n_nodes"], r.json()["n_links"]
        storm = label_storm(url, gid, nodes, args.clients)
        views = view_bench(url, big_id, args.view_requests)
        return {"backend": kind, "storm": storm, "views": views, "import_10k_s": import_s, "big_nodes": big_nodes,
                "big_links": big_links}  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(10)
        drop()


def report(results: list[dict], args) -> str:
    load = os.getloadavg()[0]
    lines = ["# Graph server load benchmark", "",
             f"Last run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `python bench/server_load.py "
             f"--db {' '.join(args.db)}`; {os.cpu_count()} CPUs, Python {platform.python_version()}, "
             f"1-min load average {load:.1f} when it finished (the machine is shared: absolute times are inflated).", "",
             f"## Label storm: {args.clients} concurrent clients x {args.nodes} label edits on one graph "
             "(each client edits every node once)", "",
             "| database | edits | failed | all in history, current = one of its edits | edits/s | p50 (ms) | p95 (ms) |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        s = r["storm"]
        lines.append(f"| {r['backend']} | {s['edits']} | {len(s['errors'])} | {'yes' if s['verified'] else 'NO'} | "
                     f"{s['rps']:.0f} | {s['p50'] * 1e3:.1f} | {s['p95'] * 1e3:.1f} |")  # fmt: skip
    lines += ["", f"## View queries on a {results[0]['big_nodes']:,}-node graph ({results[0]['big_links']:,} edges), "
              f"{results[0]['views']['clients']} concurrent clients", "",
              "| database | import (s) | first view, uncached pruning (s) | view nodes / links | requests/s (mixed) | "
              "view p50 / p95 (ms) | edges p50 / p95 (ms) | subgraph p50 / p95 (ms) |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        v = r["views"]
        lines.append(f"| {r['backend']} | {r['import_10k_s']:.1f} | {v['cold_first_view']:.2f} | {v['view_nodes']} / "
                     f"{v['view_links']} | {v['rps']:.0f} | {v['view']['p50'] * 1e3:.0f} / {v['view']['p95'] * 1e3:.0f} | "
                     f"{v['edges']['p50'] * 1e3:.0f} / {v['edges']['p95'] * 1e3:.0f} | "
                     f"{v['subgraph']['p50'] * 1e3:.0f} / {v['subgraph']['p95'] * 1e3:.0f} |")  # fmt: skip
    lines += ["", "Views: thresholds drawn from four (node, edge) pairs, each pruned once per loaded graph and then cached; "
              "edges: top-50 in or out of a random node; subgraph: 20 random pinned nodes, 5 of them in one supernode, "
              "with edge re-normalisation and both score pairs computed on the server.", ""]  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--db", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    p.add_argument("--pg", default=os.environ.get("CIRCUIT_ATLAS_TEST_PG"))
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--nodes", type=int, default=50)
    p.add_argument("--view-requests", type=int, default=480)
    p.add_argument("--out", default=str(ROOT / "bench" / "SERVER_LOAD.md"))
    args = p.parse_args()
    if "postgres" in args.db and not args.pg:
        p.error("postgres needs --pg URL or CIRCUIT_ATLAS_TEST_PG")
    results = [run_backend(kind, args.pg, args) for kind in args.db]
    text = report(results, args)
    print(text)
    Path(args.out).write_text(text + "\n")
    ok = all(r["storm"]["verified"] and not r["storm"]["errors"] for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
