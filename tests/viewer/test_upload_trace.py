"""Getting graphs in through the page: every real graph file from the field uploads and renders, a file that is
not a graph gets the server's validation message, tracing a new prompt shows its tokenisation and opens the
traced graph, and the no-outside-request guard itself works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from serverkit import REAL
from viewer.kit import shot

GRAPHS = sorted(p for p in REAL.rglob("*.json") if "nodes" in json.loads(p.read_text()))
NOT_GRAPHS = sorted(p for p in REAL.rglob("*.json") if p not in GRAPHS)


GLYPHS_DIFFER = """([a, b]) => {
  const font = getComputedStyle(document.body).fontFamily;
  const ink = (ch) => {
    const c = document.createElement('canvas'); c.width = c.height = 32;
    const x = c.getContext('2d'); x.font = `24px ${font}`; x.fillText(ch, 2, 26);
    return Array.from(x.getImageData(0, 0, 32, 32).data.filter((_, i) => i % 4 === 3));
  };
  const A = ink(a), B = ink(b);
  return A.some(v => v > 0) && A.some((v, i) => v !== B[i]);
}"""


def test_real_graph_files_are_found():
    assert len(GRAPHS) == 4, GRAPHS  # anthropic, two neuronpedia, one circuit-tracer local
    assert NOT_GRAPHS  # graph-metadata.json and the schemas


def upload_through_page(page, server, path: Path):
    page.goto(server.url + "/")
    page.wait_for_selector("#upload-form")
    page.set_input_files("#upload-file", str(path))
    page.click("#upload-form button[type=submit]")


@pytest.mark.parametrize("path", GRAPHS, ids=[p.name[:30] for p in GRAPHS])
def test_upload_each_real_graph_renders(page, server, path):
    upload_through_page(page, server, path)
    page.wait_for_url("**/graphs/*")
    page.wait_for_function("window.atlas.S.nodes.length > 0 && window.atlas.S.csr !== null")
    meta = page.evaluate("window.atlas.S.meta")
    n_nodes = page.evaluate("window.atlas.S.nodes.length")
    assert n_nodes + page.evaluate("window.atlas.S.hidden") == meta["n_nodes"]
    kinds = set(page.evaluate("window.atlas.S.nodes.map(n => n.kind)"))
    assert {"embedding", "logit"} <= kinds
    # Every drawn node is on the canvas inside the panel (nothing lost to bad layout).
    box = page.locator("#lg-body").bounding_box()
    inside = page.evaluate(
        """([x0, y0, w, h]) => window.atlas.S.nodes.map(n => window.atlas.screenPos(n.id))
             .filter(p => p.x >= x0 && p.x <= x0 + w && p.y >= y0 && p.y <= y0 + h).length""",
        [box["x"], box["y"], box["width"], box["height"]],
    )
    assert inside > 0
    # Click the logit: the connections panel lists its inputs.
    logit = page.evaluate("window.atlas.S.nodes.find(n => n.kind === 'logit').id")
    p = page.evaluate("id => window.atlas.screenPos(id)", logit)
    page.mouse.click(p["x"], p["y"])
    page.wait_for_selector("#conn-body .crow[data-id]")
    if "3plus5" in path.name:
        shot(page, "real-graph-neuronpedia")


def test_a_file_that_is_not_a_graph_gets_the_servers_message(page, server):
    upload_through_page(page, server, NOT_GRAPHS[0])
    page.wait_for_selector("#upload-msg.error")
    msg = page.inner_text("#upload-msg")
    assert msg.startswith("Upload failed:") and "metadata" in msg
    assert page.url.rstrip("/") == server.url


def test_trace_a_new_prompt_from_the_library(page, server):
    """The toy world speaks Chinese too: the preview, the graph's token labels and its fonts handle CJK."""
    page.goto(server.url + "/")
    page.wait_for_function("document.querySelector('#trace-model option') !== null")
    page.select_option("#trace-model", "toyworld")
    page.select_option("#trace-transcoders", "toyworld-clt")
    page.fill("#trace-prompt", "小的反义词是")
    page.wait_for_selector("#trace-tokens .chip", timeout=120_000)
    chips = [c.strip() for c in page.locator("#trace-tokens .chip").all_inner_texts()]
    assert "反" in chips, chips  # Chinese characters are split one by one
    shot(page, "trace-form")
    page.click("#trace-form button[type=submit]")
    page.wait_for_function(
        "/^(done|Trace failed)/.test(document.getElementById('trace-msg').textContent)", timeout=300_000
    )
    assert page.inner_text("#trace-msg") == "done", page.inner_text("#trace-msg")
    page.wait_for_url("**/graphs/*")
    page.wait_for_function("window.atlas.S.nodes.length > 0")
    assert "反" in page.evaluate("window.atlas.S.meta.tokens")
    # A CJK font is found on the system through the page's font-family fallbacks (no web font is fetched).
    assert page.evaluate("document.fonts.check('12px \"Noto Sans CJK SC\"', '反义词')")
    shot(page, "cjk-graph")


def test_the_guard_blocks_and_reports_outside_requests(browser, server):
    from viewer.conftest import Guarded

    g = Guarded(browser)
    try:
        pg = g.page()
        pg.goto(server.url + "/")
        pg.evaluate("fetch('http://example.com/x').catch(() => null)")
        pg.wait_for_timeout(300)
        assert g.outside == ["http://example.com/x"]
    finally:
        g.close()
