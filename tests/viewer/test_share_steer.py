"""Sharing and steering in a real browser: the Share button's short link restores the same view in a fresh
browser context; a Neuronpedia-style long URL restores pins, supernodes and labels; a steer on a supernode
changes the logits on the page and draws the activation change on the subgraph."""

from __future__ import annotations

import json
from urllib.parse import quote

from viewer.kit import PROMPT, card_xy, features, node_xy, open_graph, pin_three_group_two, shot, wait_saved


def test_share_link_opens_the_same_view_in_a_fresh_context(guarded, server, graph):
    first = guarded().page()
    open_graph(first, server, graph["id"])
    ids = pin_three_group_two(first, "Dallas")
    wait_saved(first)
    first.click("#share")
    first.wait_for_selector("#share-dialog:not([hidden])")
    url = first.input_value("#share-url")
    assert "/v/" in url and url.startswith(server.url)
    # Later edits do not change the shared view.
    first.keyboard.press("Escape")
    first.evaluate("window.atlas.clearPins()")
    wait_saved(first)

    fresh = guarded().page()  # a new browser context: no cookies, storage or cache in common
    fresh.goto(url)
    fresh.wait_for_function("window.atlas && window.atlas.S.nodes.length > 0 && window.atlas.S.pinned.length === 3")
    assert sorted(fresh.evaluate("window.atlas.S.pinned")) == sorted(ids)
    assert fresh.evaluate("window.atlas.S.supernodes") == [["Dallas", *ids[:2]]]
    fresh.wait_for_selector("#sg-svg g.card.supernode >> text=Dallas")
    assert "read-only" in fresh.inner_text("#banner")
    shot(fresh, "shared-view")


def test_long_neuronpedia_url_restores_pins_supernodes_and_labels(page, server, graph):
    open_graph(page, server, graph["id"])
    ids = features(page, 3)
    np_ids = page.evaluate("ids => ids.map(i => window.atlas.S.byId.get(i).np_id)", ids)
    assert all("_" in x and not x.startswith("feat") for x in np_ids)
    q = (
        f"?pinnedIds={quote(','.join(np_ids))}"
        f"&supernodes={quote(json.dumps([['Say Austin', np_ids[0], np_ids[1]]]))}"
        f"&clerps={quote(json.dumps([[np_ids[2], 'label from the link']]))}"
    )
    open_graph(page, server, graph["id"], q)
    page.wait_for_function("window.atlas.S.pinned.length === 3")
    assert sorted(page.evaluate("window.atlas.S.pinned")) == sorted(ids)
    assert page.evaluate("window.atlas.S.supernodes") == [["Say Austin", ids[0], ids[1]]]
    page.wait_for_selector(f"#sg-svg g.card[data-id='{ids[2]}'] >> text=label from the link")
    assert "pinnedIds" not in page.url  # the state now lives on the server, the URL is the plain graph URL
    wait_saved(page)
    page.reload()
    page.wait_for_function("window.atlas.S.nodes.length > 0 && window.atlas.S.pinned.length === 3")
    assert page.evaluate("window.atlas.S.supernodes") == [["Say Austin", ids[0], ids[1]]]


def test_steer_a_supernode_changes_logits_and_draws_the_change(page, server, graph):
    open_graph(page, server, graph["id"])
    pin_three_group_two(page, "Texas")
    row = page.locator("#steer-body .steer-row").first
    assert "Texas" in row.inner_text()
    # Uncheck the single pinned node's row: only the supernode is steered (scale x0 = ablate).
    page.locator("#steer-body .steer-row").nth(1).locator("input[type=checkbox]").first.uncheck()
    row.locator(".steer-value").fill("-4")
    page.wait_for_function("document.querySelector('#steer-model option') !== null")
    page.click("#steer-run")
    page.wait_for_function(
        "/^(done|Steer failed)/.test(document.getElementById('steer-msg').textContent)", timeout=300_000
    )
    assert page.inner_text("#steer-msg") == "done", page.inner_text("#steer-msg")
    table = page.locator("[data-role=steer-logits]")
    cells = table.locator("tr").nth(1).locator("td").all_inner_texts()
    before_prob, after_prob = float(cells[1]), float(cells[3])
    assert cells[0] != cells[2] or abs(before_prob - after_prob) > 1e-3, cells
    # The supernode card shows its activation before -> after.
    delta = page.locator("#sg-svg g.card.supernode g.steer-delta text")
    delta.wait_for()
    assert "→" in delta.text_content()
    shot(page, "steering")
    # The run is kept with the graph: after a reload it is listed.
    wait_saved(page)
    page.reload()
    page.wait_for_function("window.atlas.S.nodes.length > 0")
    page.wait_for_selector("#steer-body .run >> text=Past runs (1)")
    assert card_xy(page, "sn:0")


def test_slug_url_of_an_imported_circuit_tracer_graph(page, server):
    """`/?slug=<the file's slug>&pinnedIds=<its own node ids>` finds the graph and pins those nodes."""
    from serverkit import REAL, upload

    path = REAL / "circuit_tracer_local" / "dallas-austin-topk" / "dallas-austin.json"
    with server.client() as c:
        g = upload(c, path)
    page.goto(f"{server.url}/?slug=dallas-austin&pinnedIds=20_15589_7,14_2268_6")
    page.wait_for_function("window.atlas && window.atlas.S.nodes.length > 0 && window.atlas.S.pinned.length === 2")
    with server.client() as c:
        same_slug = {x["id"] for x in c.get("/api/graphs", params={"slug": "dallas-austin"}).json()}
    assert g["id"] in same_slug and page.url.rsplit("/", 1)[1] in same_slug
    assert sorted(page.evaluate("window.atlas.S.pinned")) == ["feat:14:6:2268", "feat:20:7:15589"]
    page.wait_for_selector("#sg-svg g.card[data-id='feat:20:7:15589']")


def test_steer_per_position_and_generated_tokens(page, server, graph):
    """The per-position grid sends one intervention per value (and one for generated tokens), and the page
    shows the same after-logits as the Python API run of that intervention."""
    import circuit_atlas as ca
    from circuit_atlas.interventions import Feature, scale_by

    open_graph(page, server, graph["id"])
    node = features(page, 1)[0]
    _, layer, pos, index = (int(x) if x.isdigit() else x for x in node.split(":"))
    x, y = node_xy(page, node)
    page.keyboard.down("Control")
    page.mouse.click(x, y)
    page.keyboard.up("Control")
    page.wait_for_function("window.atlas.S.pinned.length === 1")
    row = page.locator("#steer-body .steer-row").first
    row.locator("select").nth(1).select_option("grid")
    grid = row.locator(".pos-grid input")
    grid.nth(pos).fill("-2")
    grid.last.fill("0")  # generated tokens: ablate
    sent = []
    page.on("request", lambda r: sent.append(r.post_data_json) if r.url.endswith("/api/jobs/intervene") else None)
    page.wait_for_function("document.querySelector('#steer-model option') !== null")
    page.click("#steer-run")
    page.wait_for_function(
        "/^(done|Steer failed)/.test(document.getElementById('steer-msg').textContent)", timeout=300_000
    )
    assert page.inner_text("#steer-msg") == "done", page.inner_text("#steer-msg")
    ivs = sent[0]["interventions"]
    assert {(iv["value"], tuple(iv.get("positions") or ()), iv.get("generated")) for iv in ivs} == {
        (-2, (pos,), False),
        (0, (), True),
    }
    model = ca.ReplacementModel.from_pretrained("toyworld", "toyworld-clt")
    ours = model.intervene(PROMPT, [scale_by(Feature(layer, pos, index), -2.0)], mode=sent[0]["mode"])
    token, prob, _ = ours.probabilities().topk(1)[0]
    cells = page.locator("[data-role=steer-logits] tr").nth(1).locator("td").all_inner_texts()
    assert cells[2].strip().strip('"') == token and abs(float(cells[3]) - prob) < 1e-3, (cells, token, prob)
