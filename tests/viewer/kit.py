"""Helpers shared by the viewer's browser tests (imported as viewer.kit; tests/ is on sys.path)."""

from __future__ import annotations

from pathlib import Path

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PROMPT = "The capital of the state containing Dallas is"


def shot(pg, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{name}.png"))


def open_graph(pg, server, gid: str, suffix: str = "") -> None:
    pg.goto(f"{server.url}/graphs/{gid}{suffix}")
    pg.wait_for_function("window.atlas && window.atlas.S.nodes.length > 0 && window.atlas.S.csr !== null")


def node_xy(pg, node_id: str) -> tuple[float, float]:
    p = pg.evaluate("id => window.atlas.screenPos(id)", node_id)
    assert p is not None, f"{node_id} is not drawn"
    return p["x"], p["y"]


def card_xy(pg, card_id: str) -> tuple[float, float]:
    pg.wait_for_function("id => window.atlas.cardPos(id) !== null", arg=card_id)
    p = pg.evaluate("id => window.atlas.cardPos(id)", card_id)
    return p["x"], p["y"]


def features(pg, k: int) -> list[str]:
    """The k most influential feature nodes on screen, at distinct places."""
    return pg.evaluate(
        """k => window.atlas.S.nodes.filter(n => n.kind === 'feature')
              .sort((a, b) => b.influence - a.influence).slice(0, k).map(n => n.id)""",
        k,
    )


def wait_saved(pg) -> None:
    pg.evaluate("window.atlas.flushSave()")
    pg.wait_for_function("document.getElementById('save-status').textContent === 'saved'")


def pin_three_group_two(page, label="Texas"):
    ids = features(page, 3)
    for i in ids:
        x, y = node_xy(page, i)
        page.keyboard.down("Control")
        page.mouse.click(x, y)
        page.keyboard.up("Control")
    page.wait_for_function("n => window.atlas.S.pinned.length === n", arg=3)
    page.wait_for_selector("#sg-svg[data-pinned='3']")  # cards laid out for all three pins
    page.keyboard.down("g")
    for i in ids[:2]:
        page.mouse.click(*card_xy(page, i))
    page.keyboard.up("g")
    page.wait_for_function("window.atlas.S.supernodes.length === 1")
    # Click the supernode's name to rename it.
    page.locator("#sg-svg g.card.supernode text.sn-label").dispatch_event("mousedown")
    page.fill(".sg-label-input", label)
    page.keyboard.press("Enter")
    page.wait_for_function("l => window.atlas.S.supernodes[0][0] === l", arg=label)
    return ids
