"""Live jobs on the toy world through a real server: trace and intervene with streamed progress,
two jobs queued at once, cancellation of a queued and of a running job."""

from __future__ import annotations

import json
import time

PROMPT = "The capital of the state containing Dallas is"
TOY = {"model": "toyworld", "transcoders": "toyworld-clt"}


def events(c, job: str) -> list[tuple[str, dict]]:
    """Read the job's server-sent events until `done`."""
    out, event = [], None
    with c.stream("GET", f"/api/jobs/{job}/events", timeout=300) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                out.append((event, json.loads(line[6:])))
                if event == "done":
                    break
    return out


def wait(c, job: str, timeout: float = 300) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = c.get(f"/api/jobs/{job}").json()
        if s["state"] in ("done", "failed", "cancelled"):
            return s
        time.sleep(0.2)
    raise AssertionError(f"job {job} did not finish: {s}")


def test_trace_then_intervene_streamed(server):
    with server.client() as c:
        r = c.post("/api/jobs/trace", json=TOY | {"prompt": PROMPT, "max_n_logits": 3, "batch_size": 64})
        assert r.status_code == 202, r.text
        evs = events(c, r.json()["job"])
        kinds = [e for e, _ in evs]
        assert "progress" in kinds and kinds[-1] == "done"
        assert any(d.get("state") == "running" for e, d in evs if e == "state")
        done = evs[-1][1]
        assert done["state"] == "done", done
        gid = done["result"]["graph"]
        meta = c.get(f"/api/graphs/{gid}").json()
        assert meta["prompt"] == PROMPT and meta["model"] == "toyworld"

        view = c.get(f"/api/graphs/{gid}/view").json()["nodes"]
        feats = sorted((n for n in view if n["kind"] == "feature"), key=lambda n: -n["influence"])[:4]
        body = {"graph": gid, "interventions": [{"supernode": [f["id"] for f in feats[:2]], "mode": "set", "value": 0}],
                "mode": "free", "max_new_tokens": 3, "seed": 0, "top_k": 5,
                "supernodes": [["top two", feats[0]["id"], feats[1]["id"]], ["next", feats[2]["id"], feats[3]["id"]]]}  # fmt: skip
        r = c.post("/api/jobs/intervene", json=body)
        assert r.status_code == 202, r.text
        evs = events(c, r.json()["job"])
        done = evs[-1][1]
        assert done["state"] == "done", done
        res = done["result"]
        assert len(res["before"]["top"]) == 5 and res["before"]["top"][0]["token"].strip() == "Austin"
        assert res["before"]["top"] != res["after"]["top"]
        assert isinstance(res["generation_before"], str) and isinstance(res["generation_after"], str)
        top = res["supernodes"][0]
        assert top["label"] == "top two" and top["before"] > 0 and top["after"] == 0
        assert {n["id"] for n in res["nodes"]} == {feats[0]["id"], feats[1]["id"]}
        runs = c.get(f"/api/graphs/{gid}/runs").json()
        assert runs and runs[0]["result"]["supernodes"][0]["after"] == 0
        bad = c.post("/api/jobs/intervene", json=body | {"mode": "sideways"})
        assert bad.status_code == 422 and "mode" in bad.json()["detail"]
        assert c.post("/api/jobs/trace", json={"prompt": PROMPT}).status_code == 422


def test_queue_two_jobs_and_cancel(server):
    with server.client() as c:
        n_graphs = len(c.get("/api/graphs").json())
        long_prompt = " ".join(["The capital of the state containing Dallas is Austin."] * 4) + " " + PROMPT
        slow = TOY | {"prompt": long_prompt, "batch_size": 1}  # ~15 s, one progress step per row: cancellable
        a = c.post("/api/jobs/trace", json=slow).json()
        b = c.post("/api/jobs/trace", json=TOY | {"prompt": "The capital of the state containing Oakland is"}).json()
        d = c.post("/api/jobs/trace", json=TOY | {"prompt": PROMPT}).json()
        states = [c.get(f"/api/jobs/{j['job']}").json() for j in (a, b)]
        assert d["state"] == "queued" and d["position"] >= 2, (states, d)
        assert c.delete(f"/api/jobs/{d['job']}").json()["state"] == "cancelled"  # queued: removed
        while c.get(f"/api/jobs/{a['job']}").json()["state"] == "queued":
            time.sleep(0.1)
        b_state = c.get(f"/api/jobs/{b['job']}").json()
        assert b_state["state"] == "queued" and b_state["position"] == 1
        time.sleep(1.0)
        assert c.delete(f"/api/jobs/{a['job']}").status_code == 200  # running: stops at its next row
        assert wait(c, a["job"])["state"] == "cancelled"
        done = wait(c, b["job"])
        assert done["state"] == "done", done
        assert wait(c, d["job"])["state"] == "cancelled"
        graphs = c.get("/api/graphs").json()
        assert len(graphs) == n_graphs + 1  # only b stored a graph
        assert c.get("/api/jobs/nope").status_code == 404
