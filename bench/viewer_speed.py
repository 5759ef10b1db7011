"""Viewer speed in a real browser (Debian Chromium via Playwright) on a synthetic 10k-node / 1M-edge graph.

    python bench/viewer_speed.py [--nodes-per-cell 30] [--rows 1000] [--edges-per-row 1000]

Builds a causal random graph (40 positions x 8 layers x 30 features + errors, embeddings and 10 logits =
9,970 nodes; 1,000 target rows x 1,000 sources = 1M edges), starts `circuit-atlas serve` on it, and prints:
  - first paint: navigation start -> link graph drawn, at the server's default pruning (and the view's size)
  - the same with every node revealed (thresholds 1.0), i.e. at ~10k nodes
  - hover response: pointer move -> hover ring + tooltip + detail panel drawn (median / p95 over 60 nodes)
  - select response: click -> the node's edges drawn on the link graph; and -> connections list filled
Figures are printed, never asserted (see bench/README conventions).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def synthetic_graph(positions=40, layers=8, per_cell=30, rows=1000, per_row=1100, seed=0):
    from circuit_atlas.graph.graph import EMBEDDING, ERROR, FEATURE, LOGIT, Graph

    g = torch.Generator().manual_seed(seed)
    kind, layer, pos, feat = [], [], [], []
    for l in range(layers):
        for p in range(positions):
            for f in range(per_cell):
                kind.append(FEATURE), layer.append(l), pos.append(p), feat.append(p * per_cell + f)
    for l in range(layers):
        for p in range(positions):
            kind.append(ERROR), layer.append(l), pos.append(p), feat.append(-1)
    for p in range(positions):
        kind.append(EMBEDDING), layer.append(-1), pos.append(p), feat.append(100 + p)
    n_logits = 10
    for k in range(n_logits):
        kind.append(LOGIT), layer.append(layers), pos.append(positions - 1), feat.append(500 + k)
    kind_t, layer_t, pos_t = torch.tensor(kind, dtype=torch.int8), torch.tensor(layer), torch.tensor(pos)
    n = len(kind)
    n_src = n - n_logits
    # Rows: the logits plus random features above layer 1; each reads from earlier layers at earlier positions.
    feats_hi = torch.nonzero((kind_t == FEATURE) & (layer_t >= 2)).flatten()
    pick = feats_hi[torch.randperm(len(feats_hi), generator=g)[: rows - n_logits]].sort().values
    row_nodes = torch.cat([pick, torch.arange(n - n_logits, n)])
    edges = torch.zeros(len(row_nodes), n_src)
    src_layer = layer_t[:n_src]
    src_pos = pos_t[:n_src]
    for i, t in enumerate(row_nodes.tolist()):
        ok = torch.nonzero((src_layer < layer_t[t]) & (src_pos <= pos_t[t])).flatten()
        chosen = ok[torch.randperm(len(ok), generator=g)[: min(per_row, len(ok))]]
        edges[i, chosen] = torch.randn(len(chosen), generator=g) * torch.rand(len(chosen), generator=g) ** 3
    probs = torch.softmax(torch.randn(n_logits, generator=g) * 2, 0)
    activation = torch.rand(n, generator=g) * 3
    activation[n - n_logits :] = probs
    tokens = [f" w{p}" for p in range(positions)]
    return Graph(
        prompt="".join(tokens),
        input_ids=torch.arange(positions),
        tokens=tokens,
        n_layers=layers,
        kind=kind_t,
        layer=layer_t,
        position=pos_t,
        feature=torch.tensor(feat),
        activation=activation,
        edges=edges,
        row_nodes=row_nodes,
        logit_labels=[f" out{k}" for k in range(n_logits)],
        metadata={"format_version": 1, "model": "synthetic", "transcoders": "synthetic", "targets": []},
    )


HOVER_JS = """async (ids) => {
  const frame = () => new Promise(r => requestAnimationFrame(() => r()));
  const body = document.getElementById('lg-body');
  const out = [];
  for (const id of ids) {
    const p = window.atlas.screenPos(id);
    if (!p) continue;
    await frame();
    const t0 = performance.now();
    body.dispatchEvent(new MouseEvent('mousemove', {clientX: p.x, clientY: p.y, bubbles: true}));
    await new Promise(r => setTimeout(r, 0));      // detail panel render (timer 0)
    await frame();                                  // overlay redraw happens in this frame
    out.push(performance.now() - t0);
    if (window.atlas.S.hovered !== id && window.atlas.S.hovered === null) out.pop();
  }
  return out;
}"""

SELECT_JS = """async (ids) => {
  const frame = () => new Promise(r => requestAnimationFrame(() => r()));
  const body = document.getElementById('lg-body');
  const local = [], lists = [];
  for (const id of ids) {
    const p = window.atlas.screenPos(id);
    if (!p) continue;
    await frame();
    const t0 = performance.now();
    body.dispatchEvent(new MouseEvent('mousedown', {clientX: p.x, clientY: p.y, button: 0, bubbles: true}));
    window.dispatchEvent(new MouseEvent('mouseup', {clientX: p.x, clientY: p.y, button: 0, bubbles: true}));
    await frame();
    local.push(performance.now() - t0);
    const t1 = performance.now();
    while (!document.querySelector('#conn-body .crow[data-id]') && performance.now() - t1 < 5000)
      await new Promise(r => setTimeout(r, 2));
    lists.push(performance.now() - t0);
    // deselect for the next round
    body.dispatchEvent(new MouseEvent('mousedown', {clientX: 3, clientY: 3, button: 0, bubbles: true}));
    window.dispatchEvent(new MouseEvent('mouseup', {clientX: 3, clientY: 3, button: 0, bubbles: true}));
    await frame();
  }
  return [local, lists];
}"""


def stats(xs):
    xs = sorted(xs)
    return f"median {statistics.median(xs):.1f} ms, p95 {xs[int(0.95 * (len(xs) - 1))]:.1f} ms, max {xs[-1]:.1f} ms (n={len(xs)})"


def interact(pg, nodes, links):
    pg.wait_for_function("window.atlas.S.csr !== null")
    ids = pg.evaluate("window.atlas.S.nodes.filter((n, i) => i % 97 === 0).slice(0, 60).map(n => n.id)")
    hover = pg.evaluate(HOVER_JS, ids)
    print(f"  hover response ({nodes} nodes, {links:,} edges): {stats(hover)}")
    local, lists = pg.evaluate(SELECT_JS, ids[:30])
    print(f"  select response (edges drawn on the link graph): {stats(local)}")
    print(f"  select -> connections list filled (server round trip): {stats(lists)}")


def first_paint(browser, url):
    ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
    pg = ctx.new_page()
    pg.goto(url)
    pg.wait_for_function("window.__atlasTimings && window.__atlasTimings.firstPaintMs !== undefined", timeout=120_000)
    t = pg.evaluate("window.__atlasTimings")
    t["dcl"] = pg.evaluate("performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd")
    n = pg.evaluate("[window.atlas.S.nodes.length, window.atlas.S.links.n, window.atlas.S.hidden]")
    return pg, ctx, t, n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes-per-cell", type=int, default=30)
    ap.add_argument("--rows", type=int, default=1100)
    ap.add_argument("--edges-per-row", type=int, default=1100)
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from playwright.sync_api import sync_playwright
    from serverkit import Server

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        graph = synthetic_graph(per_cell=args.nodes_per_cell, rows=args.rows, per_row=args.edges_per_row)
        path = Path(tmp) / "big.safetensors"
        graph.save(str(path))
        print(f"graph: {graph.n_nodes} nodes, {graph.n_edges:,} edges ({time.time() - t0:.1f} s to build)")
        t0 = time.time()
        srv = Server(Path(tmp) / "data", None)
        try:
            with srv.client() as c:
                gid = c.post("/api/graphs", files={"file": ("big.safetensors", path.read_bytes())}).json()["id"]
                t1 = time.time()
                c.get(f"/api/graphs/{gid}/view")  # warm the server's cache: the first read loads the file
            print(f"import: {t1 - t0:.1f} s; first server view (loads the graph): {time.time() - t1:.1f} s")
            url = f"{srv.url}/graphs/{gid}"
            with sync_playwright() as p:
                b = p.chromium.launch(executable_path=os.environ.get("CIRCUIT_ATLAS_CHROMIUM", "/usr/bin/chromium"),
                                      args=["--no-sandbox"])  # fmt: skip
                for attempt in ("cold", "warm"):  # warm: a second visit in the same context (HTTP cache)
                    if attempt == "cold":
                        pg, ctx, t, (nodes, links, hidden) = first_paint(b, url)
                    else:
                        pg.goto(url)
                        pg.wait_for_function(
                            "window.__atlasTimings && window.__atlasTimings.firstPaintMs !== undefined"
                        )
                        t = pg.evaluate("window.__atlasTimings")
                        t["dcl"] = pg.evaluate("performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd")
                    print(f"first paint, default pruning ({attempt}): {t['firstPaintMs']:.0f} ms from navigation "
                          f"(page + modules {t['dcl']:.0f} ms, view fetch {t.get('viewFetchMs', 0):.0f} ms, "
                          f"layout+draw {t['layoutDrawMs']:.0f} ms); {nodes} nodes, {links:,} edges shown, {hidden} hidden")  # fmt: skip
                interact(pg, nodes, links)
                ctx.close()
                # Every node: thresholds to 1.0 (node, then node and edge), then first paint and interaction.
                for edge in (0.98, 1.0):
                    with srv.client() as c:
                        st = c.get(f"/api/graphs/{gid}/state").json()
                        c.put(f"/api/graphs/{gid}/state",
                              json={"node_threshold": 1.0, "edge_threshold": edge, "base_version": st.get("version")})  # fmt: skip
                    pg, ctx, t, (nodes, links, hidden) = first_paint(b, url)
                    print(f"first paint, node threshold 1.0, edge threshold {edge}: {t['firstPaintMs']:.0f} ms "
                          f"(view fetch {t.get('viewFetchMs', 0):.0f} ms, layout+draw {t['layoutDrawMs']:.0f} ms); "
                          f"{nodes} nodes, {links:,} edges, {hidden} hidden")  # fmt: skip
                    interact(pg, nodes, links)
                    ctx.close()
                b.close()
        finally:
            srv.stop()


if __name__ == "__main__":
    main()
