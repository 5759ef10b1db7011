"""The viewer page in a real browser on the toy-world graph: library, link graph hover / select, node
connections, feature detail, pins, supernodes, labels, persistence across reloads, undo, pruning, search,
keyboard map and export."""

from __future__ import annotations

import json

from viewer.kit import PROMPT, card_xy, features, node_xy, open_graph, pin_three_group_two, shot, wait_saved


def test_library_lists_and_opens_a_graph(page, server, graph):
    page.goto(server.url + "/")
    row = page.locator(f"#lib-table tr[data-id='{graph['id']}']")
    row.wait_for()
    assert PROMPT in row.inner_text()
    assert "toyworld-clt" in row.inner_text()  # the set as loaded, not the opaque scan id
    page.fill("#lib-q", "no graph has this prompt")
    page.wait_for_function("id => !document.querySelector(`#lib-table tr[data-id='${id}']`)", arg=graph["id"])
    page.fill("#lib-q", "")
    row.wait_for()
    shot(page, "library")
    row.locator("a").click()
    page.wait_for_function("window.atlas.S.nodes.length > 0")
    assert page.url.endswith(f"/graphs/{graph['id']}")
    assert "hidden by filters" in page.inner_text("#hidden-count")


def test_hover_and_click_update_connections_and_detail(page, server, graph):
    open_graph(page, server, graph["id"])
    node = features(page, 1)[0]
    x, y = node_xy(page, node)
    page.mouse.move(x, y)
    page.wait_for_function("id => window.atlas.S.hovered === id", arg=node)
    layer, feature = node.split(":")[1], node.split(":")[3]
    assert f"Feature L{layer}/{feature}" in page.inner_text("#detail-body")
    assert page.is_visible("#tooltip")
    # The toy world ships its dashboards: the panel draws this feature's (histogram, promoted tokens, examples).
    page.wait_for_selector("#detail-body [data-dashboard=shown]")
    from circuit_atlas.features.dashboards import load_dashboard

    dash = load_dashboard("toyworld-clt", int(layer), int(feature)).to_json()
    body = page.inner_text("#detail-body")
    assert "Activation histogram" in body and "Top promoted tokens" in body
    assert dash["top_logits"][0].strip() in body
    assert page.locator("#detail-body .ex").count() > 0
    page.mouse.click(x, y)
    page.wait_for_function("id => window.atlas.S.selected === id", arg=node)
    page.wait_for_selector("#conn-body .conn-col .crow[data-id]")
    inputs = page.locator("#conn-body .conn-col").nth(0)
    assert "Input features" in inputs.inner_text()
    weights = [float(t.replace("+", "")) for t in inputs.locator(".crow[data-id] .w").all_inner_texts()]
    positives = [w for w in weights if w > 0]
    assert positives and positives == sorted(positives, reverse=True), weights
    # Hovering a row in the connections list hovers that node everywhere.
    first = inputs.locator(".crow[data-id]").first
    other = first.get_attribute("data-id")
    first.hover()
    page.wait_for_function("id => window.atlas.S.hovered === id", arg=other)
    page.mouse.move(x, y)
    shot(page, "link-graph-selected")
    # Group the inputs by layer: group headers appear.
    page.select_option("#conn-group", "layer")
    page.wait_for_selector("#conn-body .crow.ghead >> text=/Emb|L\\d/")
    # Empty space deselects.
    page.mouse.click(*empty_spot(page))
    page.wait_for_function("window.atlas.S.selected === null")


def empty_spot(page):
    box = page.locator("#lg-body").bounding_box()
    return box["x"] + 3, box["y"] + 3


def test_pin_group_label_persist_across_reload(page, server, graph):
    open_graph(page, server, graph["id"])
    ids = pin_three_group_two(page)
    # Edit the third node's label from the feature-detail panel, per node.
    page.mouse.click(*card_xy(page, ids[2]))
    page.wait_for_function("id => window.atlas.S.selected === id", arg=ids[2])
    page.click("#detail-body [data-action=edit-label]")
    page.fill("#detail-body input", "says Austin")
    page.select_option("#detail-body select", "node")
    page.click("#detail-body button.primary")
    page.wait_for_selector("#detail-body .label-text >> text=says Austin")
    page.fill("#detail-body [data-role=note]", "fires on the answer position")
    page.locator("#detail-body [data-role=note]").blur()
    page.wait_for_function("id => window.atlas.S.notes[id] === 'fires on the answer position'", arg=ids[2])
    wait_saved(page)
    shot(page, "subgraph")
    page.reload()
    page.wait_for_function("window.atlas.S.nodes.length > 0 && window.atlas.S.pinned.length === 3")
    assert page.evaluate("window.atlas.S.supernodes") == [["Texas", *ids[:2]]]
    page.wait_for_selector("#sg-svg g.card.supernode >> text=Texas")
    page.wait_for_selector(f"#sg-svg g.card[data-id='{ids[2]}'] >> text=says Austin")
    assert page.locator("#sg-svg g.card").count() == 2
    # The server holds the same state (not just this browser).
    with server.client() as c:
        st = c.get(f"/api/graphs/{graph['id']}/state").json()
        labels = c.get(f"/api/graphs/{graph['id']}/labels").json()
    assert sorted(st["pinned"]) == sorted(ids) and st["supernodes"] == [["Texas", *ids[:2]]]
    assert labels[ids[2]]["text"] == "says Austin"
    assert st["notes"] == {ids[2]: "fires on the answer position"}
    page.mouse.click(*card_xy(page, ids[2]))
    assert page.input_value("#detail-body [data-role=note]") == "fires on the answer position"


def test_dragged_card_position_is_saved(page, server, graph):
    open_graph(page, server, graph["id"])
    ids = features(page, 2)
    for i in ids:
        page.keyboard.down("Control")
        page.mouse.click(*node_xy(page, i))
        page.keyboard.up("Control")
    page.wait_for_selector("#sg-svg[data-pinned='2']")
    x, y = card_xy(page, ids[0])
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x - 120, y - 40, steps=5)
    page.mouse.up()
    page.wait_for_function("id => !!window.atlas.S.positions[id]", arg=ids[0])
    wait_saved(page)
    saved = page.evaluate("id => window.atlas.S.positions[id]", ids[0])
    page.reload()
    page.wait_for_function("window.atlas.S.nodes.length > 0")
    assert page.evaluate("id => window.atlas.S.positions[id]", ids[0]) == saved
    nx, ny = card_xy(page, ids[0])
    assert abs(nx - (x - 120)) < 6 and abs(ny - (y - 40)) < 6


def test_undo_redo_a_pin(page, server, graph):
    open_graph(page, server, graph["id"])
    node = features(page, 1)[0]
    page.keyboard.down("Control")
    page.mouse.click(*node_xy(page, node))
    page.keyboard.up("Control")
    page.wait_for_function("window.atlas.S.pinned.length === 1")
    page.keyboard.press("Control+z")
    page.wait_for_function("window.atlas.S.pinned.length === 0")
    page.keyboard.press("Control+Shift+z")
    page.wait_for_function("window.atlas.S.pinned.length === 1")
    wait_saved(page)
    with server.client() as c:
        assert c.get(f"/api/graphs/{graph['id']}/state").json()["pinned"] == [node]


def test_pruning_slider_hidden_count_and_reveal(page, server, graph):
    open_graph(page, server, graph["id"])
    shown = page.evaluate("window.atlas.S.nodes.length")
    hidden = page.evaluate("window.atlas.S.hidden")
    assert hidden > 0
    assert f"{hidden} nodes hidden by filters" in page.inner_text("#hidden-count")
    # A pinned node survives any threshold.
    node = page.evaluate(
        "window.atlas.S.nodes.filter(n => n.kind === 'feature').sort((a,b) => a.influence - b.influence)[0].id"
    )
    page.keyboard.down("Control")
    page.mouse.click(*node_xy(page, node))
    page.keyboard.up("Control")
    page.keyboard.press("[")
    page.wait_for_function("t => window.atlas.S.nodes.length < t", arg=shown)
    assert page.evaluate("id => window.atlas.S.byId.has(id)", node)
    assert abs(page.evaluate("window.atlas.S.nodeThreshold") - 0.75) < 1e-9
    # Moving the threshold in a run is one undo step.
    page.keyboard.press("[")
    page.wait_for_function("Math.abs(window.atlas.S.nodeThreshold - 0.7) < 1e-9")
    page.keyboard.press("Control+z")
    page.wait_for_function("Math.abs(window.atlas.S.nodeThreshold - 0.8) < 1e-9")
    assert page.evaluate("window.atlas.S.pinned") == [node]
    page.wait_for_function("n => window.atlas.S.nodes.length === n", arg=shown)
    page.click("#reveal")
    page.wait_for_function("t => window.atlas.S.edgeThreshold === 1 && window.atlas.S.nodes.length > t", arg=shown)
    now, left = page.evaluate("[window.atlas.S.nodes.length, window.atlas.S.hidden]")
    assert now + left == shown + hidden and left == 0  # thresholds of 1.0 mean "no pruning"
    assert "0 nodes hidden by filters" in page.inner_text("#hidden-count")
    assert page.is_hidden("#reveal")


def test_search_with_slash_finds_a_node_by_label(page, server, graph):
    open_graph(page, server, graph["id"])
    node = features(page, 5)[4]
    with server.client() as c:
        r = c.put(f"/api/graphs/{graph['id']}/labels/{node}", json={"text": "Lone Star marker", "scope": "graph"})
        assert r.status_code == 200, r.text
    open_graph(page, server, graph["id"])
    page.keyboard.press("/")
    page.fill("#search-q", "lone star")
    page.wait_for_selector("#search-results li >> text=Lone Star marker")
    shot(page, "search")
    page.keyboard.press("Enter")
    page.wait_for_function("id => window.atlas.S.selected === id", arg=node)
    assert page.is_hidden("#search")
    # By layer: "L0" lists layer-0 nodes only; Ctrl+Enter pins the first.
    page.keyboard.press("/")
    page.fill("#search-q", "L0")
    page.wait_for_selector("#search-results li")
    first = page.evaluate(
        "window.atlas.S.nodes.find(n => n.kind === 'feature' && n.layer === 0 || n.kind === 'error' && n.layer === 0).id"
    )
    page.keyboard.press("Control+Enter")
    page.wait_for_function("id => window.atlas.S.pinned.includes(id)", arg=first)


def test_keyboard_map_and_escape(page, server, graph):
    open_graph(page, server, graph["id"])
    page.keyboard.press("?")
    assert page.is_visible("#help")
    text = page.inner_text("#keymap")
    for key in ("/", "hold g", "Esc", "[ / ]", "u", "f"):
        assert key in text
    page.keyboard.press("Escape")
    assert page.is_hidden("#help")
    node = features(page, 1)[0]
    page.mouse.click(*node_xy(page, node))
    page.wait_for_function("window.atlas.S.selected !== null")
    page.keyboard.press("Escape")
    page.wait_for_function("window.atlas.S.selected === null")


def test_ungroup_with_u(page, server, graph):
    open_graph(page, server, graph["id"])
    pin_three_group_two(page)
    page.mouse.click(*card_xy(page, "sn:0"))
    page.wait_for_function("window.atlas.S.selected === 'sn:0'")
    page.keyboard.press("u")
    page.wait_for_function("window.atlas.S.supernodes.length === 0")
    assert page.evaluate("window.atlas.S.pinned.length") == 3


def test_export_svg_png_and_json(page, server, graph):
    open_graph(page, server, graph["id"])
    ids = features(page, 2)
    for i in ids:
        page.keyboard.down("Control")
        page.mouse.click(*node_xy(page, i))
        page.keyboard.up("Control")
    page.mouse.click(*node_xy(page, ids[0]))
    page.wait_for_selector("#sg-svg g.card")

    def grab(what):
        page.click("#export-open")
        with page.expect_download() as d:
            page.click(f"[data-export={what}]")
        return open(d.value.path(), "rb").read()

    svg = grab("lg-svg").decode()
    assert svg.startswith("<svg") and svg.count("<circle") >= 10 and "<line" in svg
    png = grab("lg-png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(png[16:20], "big")
    css_width = page.evaluate("document.getElementById('lg-body').getBoundingClientRect().width")
    assert width >= 2 * css_width  # high-DPI
    sg = grab("sg-svg").decode()
    assert "<svg" in sg and "card" in sg
    assert grab("sg-png")[:8] == b"\x89PNG\r\n\x1a\n"
    exported = json.loads(grab("json"))
    assert exported["nodes"] and exported["links"]
    assert sorted(exported["qParams"]["pinnedIds"].split(",") if isinstance(exported["qParams"]["pinnedIds"], str)
                  else exported["qParams"]["pinnedIds"])  # fmt: skip


def test_error_node_detail_shows_its_share_of_the_mlp_output(page, server, graph, toy_file):
    from circuit_atlas.graph.graph import Graph

    shares = Graph.load(str(toy_file)).metadata["error_share"]
    open_graph(page, server, graph["id"])
    errors = page.evaluate("window.atlas.S.nodes.filter(n => n.kind === 'error').map(n => n.id)")
    assert errors, "the default view shows error nodes"
    node = errors[0]
    x, y = node_xy(page, node)
    page.mouse.click(x, y)
    page.wait_for_function("id => window.atlas.S.selected === id", arg=node)
    _, layer, pos = node.split(":")
    expected = f"{100 * shares[f'{layer}:{pos}']:.1f}%"
    page.wait_for_function("t => document.querySelector('#detail-body').innerText.includes(t)", arg=expected)
    assert "Share of the MLP output left unexplained by the transcoder" in page.inner_text("#detail-body")
