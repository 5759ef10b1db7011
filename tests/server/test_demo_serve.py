"""`circuit-atlas demo` (without --no-serve) ends with the graph server running on the demo graph."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import httpx
from serverkit import ROOT, free_port


def test_demo_ends_with_the_server_on_its_graph(tmp_path):
    port = free_port()
    log = open(tmp_path / "demo.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "circuit_atlas", "demo", "--out-dir", str(tmp_path / "demo"),
                             "--port", str(port)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.time() + 300
        url = None
        while time.time() < deadline and url is None:
            assert proc.poll() is None, (tmp_path / "demo.log").read_text()
            m = re.search(r"graph server on (http://\S+/graphs/(\w+))", (tmp_path / "demo.log").read_text())
            url = m and m.group(1)
            time.sleep(0.5)
        assert url, (tmp_path / "demo.log").read_text()
        gid = url.rsplit("/", 1)[1]
        for _ in range(100):
            try:
                graphs = httpx.get(f"http://127.0.0.1:{port}/api/graphs", timeout=5).json()
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert [g["id"] for g in graphs] == [gid] and graphs[0]["name"] == "demo-two-hop"
        view = httpx.get(f"http://127.0.0.1:{port}/api/graphs/{gid}/view").json()
        assert any(n["kind"] == "logit" for n in view["nodes"])
        assert httpx.get(url).status_code == 200
    finally:
        proc.terminate()
        proc.wait(20)
