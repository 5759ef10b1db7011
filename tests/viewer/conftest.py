"""Browser tests of the viewer page: a real `circuit-atlas serve` process (SQLite, temp data folder), the
toy-world graph uploaded to it, and Debian's Chromium driven by Playwright. Every page is opened in a context
that blocks and records any request to a host other than 127.0.0.1, and fails the test if one was made or if
the page threw an uncaught error."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from serverkit import Server, upload
from viewer.kit import PROMPT


@pytest.fixture(scope="session")
def toy_file(tmp_path_factory) -> Path:
    from circuit_atlas import attribute
    from circuit_atlas.replacement_model import ReplacementModel

    path = tmp_path_factory.mktemp("toy") / "dallas.safetensors"
    model = ReplacementModel.from_pretrained("toyworld", "toyworld-clt")
    attribute(model, PROMPT, progress=False).save(str(path))
    return path


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("viewer") / "data", None)
    yield srv
    srv.stop()


@pytest.fixture()
def graph(server, toy_file) -> dict:
    """A fresh import of the toy graph (its own labels and state), named uniquely."""
    with server.client() as c:
        return upload(c, toy_file)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=os.environ.get("CIRCUIT_ATLAS_CHROMIUM", "/usr/bin/chromium"),
                              args=["--no-sandbox"])  # fmt: skip
        yield b
        b.close()


class Guarded:
    """A browser context whose requests may only go to 127.0.0.1."""

    def __init__(self, browser):
        self.outside: list[str] = []
        self.errors: list[str] = []
        self.ctx = browser.new_context(viewport={"width": 1600, "height": 1000}, accept_downloads=True)
        self.ctx.set_default_timeout(60_000)  # the CI machine may be shared: waits are for events, not for speed
        self.ctx.route("**/*", self._route)

    def _route(self, route):
        host = urlsplit(route.request.url).hostname
        if route.request.url.startswith(("data:", "blob:")) or host == "127.0.0.1":
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()

    def page(self):
        pg = self.ctx.new_page()
        pg.on("pageerror", lambda e: self.errors.append(str(e)))
        return pg

    def close(self):
        self.ctx.close()


@pytest.fixture()
def guarded(browser):
    contexts = []

    def make():
        g = Guarded(browser)
        contexts.append(g)
        return g

    yield make
    for g in contexts:
        g.close()
    outside = [u for g in contexts for u in g.outside]
    errors = [e for g in contexts for e in g.errors]
    assert not outside, f"the page requested hosts other than the server: {outside}"
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture()
def page(guarded):
    return guarded().page()
