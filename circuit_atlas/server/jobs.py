"""Live jobs: "trace a new prompt" and "intervene / steer" against loaded models.

A FIFO queue served by `job_concurrency` worker threads, so a second user's job waits in line
("queued", with its position) instead of failing, and never blocks reads. Progress is a list of
events per job, streamed as server-sent events. Cancelling a queued job removes it; cancelling a
running one sets a flag that the job checks between phases and in its progress callback, where
it raises, so the job stops and stores nothing. Models are loaded on first use and kept.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from .db import GraphRow, JobRow
from .deps import DB, NotFound

FINAL = ("done", "failed", "cancelled")
MAX_NEW_TOKENS = 64
_local = threading.local()


class Cancelled(Exception):
    pass


@dataclass
class Job:
    id: str
    kind: str
    request: dict
    state: str = "queued"
    progress: float = 0.0
    message: str = ""
    result: Any = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    events: list = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)

    def emit(self, event: str, data: dict) -> None:
        self.events.append((event, data))

    def check(self) -> None:
        if self.cancel.is_set():
            raise Cancelled

    def report(self, done: float, total: float, message: str) -> None:
        self.check()
        self.progress = done / total if total else 0.0
        self.message = message
        self.emit("progress", {"progress": self.progress, "message": message})


def _install_progress_hook() -> None:
    """attribute() reports rows through a tqdm bar; swap in a subclass that also calls the running
    job's callback (thread-local, so concurrent jobs each see their own), which is where a
    cancelled trace raises. No change to the attribution code is needed."""
    from tqdm.auto import tqdm

    import circuit_atlas.attribution.attribute as attribute_module

    if getattr(attribute_module.tqdm, "_circuit_atlas_hook", False):
        return

    class ReportingBar(tqdm):
        _circuit_atlas_hook = True

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._done, self._total, self._desc = 0, kwargs.get("total") or 0, kwargs.get("desc") or "rows"

        def update(self, n=1):
            out = super().update(n)
            self._done += n or 0
            job = getattr(_local, "job", None)
            if job is not None:
                job.report(self._done, self._total, f"{self._desc}: {self._done}/{self._total}")
            return out

    attribute_module.tqdm = ReportingBar


class ModelPool:
    """(model, transcoders) -> ReplacementModel, loaded once and kept."""

    def __init__(self):
        self._models: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def get(self, model: str, transcoders: str):
        from circuit_atlas.replacement_model import ReplacementModel

        key = (model, transcoders)
        with self._lock:
            if key not in self._models:
                self._models[key] = ReplacementModel.from_pretrained(model, transcoders)
            return self._models[key]

    def loaded(self) -> list[dict]:
        return [{"model": m, "transcoders": t} for m, t in self._models]


class JobQueue:
    def __init__(self, config, Sessions, app_ref):
        self.config, self.Sessions, self.app_ref = config, Sessions, app_ref
        self.jobs: dict[str, Job] = {}
        self.pending: deque[str] = deque()
        self.cond = threading.Condition()
        self.models = ModelPool()
        self.workers: list[threading.Thread] = []
        _install_progress_hook()

    def start(self) -> None:
        """Start the workers (on the first job) ; caller holds self.cond."""
        for i in range(self.config.job_concurrency):
            t = threading.Thread(target=self._work, name=f"job-worker-{i}", daemon=True)
            t.start()
            self.workers.append(t)

    def preload(self) -> None:
        """Load the models named at `serve` time in the background, so the first job does not wait."""
        if self.config.models:
            threading.Thread(target=self._preload, daemon=True).start()

    def _preload(self) -> None:
        for m, t in zip(self.config.models, self.config.transcoders):
            try:
                self.models.get(m, t)
            except Exception as exc:  # a bad --model is reported on the jobs that use it
                print(f"circuit-atlas serve: could not load {m} / {t}: {exc}", flush=True)

    def submit(self, kind: str, request: dict) -> Job:
        job = Job(id=secrets.token_hex(8), kind=kind, request=request)
        with self.Sessions() as s:
            s.add(JobRow(id=job.id, kind=kind, state="queued", graph_id=request.get("graph"), request=request,
                         created=job.created))  # fmt: skip
            s.commit()
        with self.cond:
            if not self.workers:
                self.start()
            self.jobs[job.id] = job
            self.pending.append(job.id)
            job.emit("state", {"state": "queued", "position": len(self.pending)})
            self.cond.notify()
        return job

    def position(self, job: Job) -> int | None:
        with self.cond:
            return list(self.pending).index(job.id) + 1 if job.id in self.pending else None

    def cancel(self, job: Job) -> None:
        with self.cond:
            if job.state in FINAL:
                return
            job.cancel.set()
            if job.id in self.pending:
                self.pending.remove(job.id)
                self._finish(job, "cancelled")

    def _finish(self, job: Job, state: str) -> None:
        job.state = state
        if state == "done":
            job.progress = 1.0
        job.emit("state", {"state": state})
        job.emit("done", self.describe(job))
        with self.Sessions() as s:
            row = s.get(JobRow, job.id)
            if row is not None:
                row.state, row.result, row.error, row.finished = state, job.result, job.error, time.time()
                s.commit()

    def _work(self) -> None:
        while True:
            with self.cond:
                while not self.pending:
                    self.cond.wait()
                job = self.jobs[self.pending.popleft()]
                job.state = "running"
            job.emit("state", {"state": "running"})
            _local.job = job
            try:
                job.check()
                job.result = (run_trace if job.kind == "trace" else run_intervention)(self, job)
                job.check()
                self._finish(job, "done")
            except Cancelled:
                self._finish(job, "cancelled")
            except Exception as exc:
                job.error = f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, (ValueError, KeyError)):
                    traceback.print_exc()
                self._finish(job, "failed")
            finally:
                _local.job = None

    def describe(self, job: Job) -> dict:
        out = {"id": job.id, "kind": job.kind, "state": job.state, "progress": job.progress, "message": job.message,
               "created": job.created}  # fmt: skip
        if job.state == "queued":
            out["position"] = self.position(job)
        if job.result is not None:
            out["result"] = job.result
        if job.error:
            out["error"] = job.error
        return out


# --- the two jobs ----------------------------------------------------------------------

TRACE_OPTIONS = {"max_n_logits": int, "desired_logit_prob": float, "max_feature_nodes": int, "batch_size": int}


def check_trace(body: dict) -> dict:
    for key in ("model", "transcoders", "prompt"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise ValueError(f"{key} must be a non-empty string")
    out = {k: body[k] for k in ("model", "transcoders", "prompt")}
    for key, typ in TRACE_OPTIONS.items():
        if body.get(key) is not None:
            if not isinstance(body[key], (int, float)) or isinstance(body[key], bool):
                raise ValueError(f"{key} must be a number")
            out[key] = typ(body[key])
    out["name"] = str(body.get("name") or "")[:500] or None
    unknown = set(body) - set(out) - {"name"}
    if unknown:
        raise ValueError(f"unknown trace option(s) {sorted(unknown)}; options: {sorted(TRACE_OPTIONS)}")
    return out


def run_trace(queue: JobQueue, job: Job) -> dict:
    from circuit_atlas.attribution.attribute import attribute

    r = job.request
    job.report(0, 1, f"loading {r['model']} / {r['transcoders']}")
    model = queue.models.get(r["model"], r["transcoders"])
    job.report(0, 1, "tracing")
    options = {k: r[k] for k in TRACE_OPTIONS if r.get(k) is not None}
    graph = attribute(model, r["prompt"], progress=False, **options)
    job.check()
    graph.metadata["scan"] = f"{r['model']}/{r['transcoders']}"
    graph.metadata["server_model"] = {"model": r["model"], "transcoders": r["transcoders"]}
    app = queue.app_ref()
    with queue.Sessions() as session:
        summary = app.state.store(graph, r.get("name") or r["prompt"][:80], ["traced"], f"trace:{job.id}", session)
        row = session.get(GraphRow, summary["id"])
        row.model = r["model"]
        row.meta = dict(row.meta) | {"server_model": graph.metadata["server_model"]}
        session.commit()
    return {"graph": summary["id"], "n_nodes": summary["n_nodes"], "n_links": summary["n_links"]}


def _top(logits: torch.Tensor, tokenizer, k: int) -> list[dict]:
    probs = torch.softmax(logits.double(), -1)
    values, ids = probs.topk(k)
    return [{"token": tokenizer.decode([i]), "token_id": int(i), "prob": float(p)}
            for p, i in zip(values.tolist(), ids.tolist())]  # fmt: skip


def run_intervention(queue: JobQueue, job: Job) -> dict:
    from circuit_atlas.interventions.spec import Feature, Intervention

    r = job.request
    app = queue.app_ref()
    loaded, current_labels = app.state.helpers["loaded"], app.state.helpers["current_labels"]
    with queue.Sessions() as session:
        row, lg = loaded(session, r["graph"])
        labs = current_labels(session, row, lg)
        model_info = (row.meta or {}).get("server_model") or {}
    model_name = r.get("model") or model_info.get("model")
    tc_name = r.get("transcoders") or model_info.get("transcoders")
    if not model_name or not tc_name:
        raise ValueError("this graph was not traced on this server: name the model and transcoders it was traced with")
    job.report(0, 4, f"loading {model_name} / {tc_name}")
    model = queue.models.get(model_name, tc_name)
    nt = lg.nodes
    prompt = lg.graph.input_ids.tolist() if (lg.graph.input_ids >= 0).all() else lg.graph.prompt
    T = len(lg.graph.tokens)
    n_new = r["max_new_tokens"]

    def feature_of(node_id: str) -> Feature:
        i = nt.resolve(node_id)
        if nt.kinds[i] != "feature":
            raise ValueError(f"{node_id} is a {nt.kinds[i]} node; only features can be set or scaled")
        return Feature(nt.layer[i], nt.position[i], nt.feature[i])

    edits, generated_edits = [], []  # generated-token edits only apply when generating
    for spec in r["interventions"]:
        members = spec.get("supernode") or [spec["node"]]
        for f in map(feature_of, members):
            # no "positions": where the feature is active; an explicit [] (with "generated"): generated tokens only
            positions = spec["positions"] if spec.get("positions") is not None else [f.position]
            if not positions and not spec.get("generated"):
                raise ValueError(
                    f"intervention on {members[0]} has no positions and no generated tokens: it edits nothing"
                )
            kw = {"value": spec["value"]} if spec["mode"] == "set" else {"scale": spec["value"]}
            for p in positions:
                edits.append(Intervention((f.layer, f.index), position=int(p), **kw))
            if spec.get("generated") and n_new > 1:
                generated_edits.append(Intervention((f.layer, f.index), position=slice(T, None), **kw))
    job.report(1, 4, "running the prompt before and after")
    before = model.intervene(prompt, [], mode=r["mode"])
    after = model.intervene(prompt, edits, mode=r["mode"])
    job.check()
    k = r["top_k"]
    result: dict[str, Any] = {"before": {"top": _top(before.logits[-1], model.tokenizer, k)},
                              "after": {"top": _top(after.logits[-1], model.tokenizer, k)}}  # fmt: skip
    supernodes = r.get("supernodes") or []
    result["supernodes"] = []
    for group in supernodes:
        feats = [feature_of(x) for x in group[1:] if nt.kinds[nt.resolve(x)] == "feature"]
        result["supernodes"].append({"label": group[0], "members": group[1:],
                                     "before": sum(before.activations.value(f) for f in feats),
                                     "after": sum(after.activations.value(f) for f in feats)})  # fmt: skip
    watched = list(dict.fromkeys(r.get("watch") or []))
    for spec in r["interventions"]:
        watched += [x for x in (spec.get("supernode") or [spec["node"]]) if x not in watched]
    result["nodes"] = []
    for x in watched:
        i = nt.resolve(x)
        if nt.kinds[i] == "feature":
            f = feature_of(x)
            result["nodes"].append({"id": nt.ids[i], "label": labs[i]["text"] if i in labs else nt.auto_labels[i],
                                    "before": before.activations.value(f), "after": after.activations.value(f)})  # fmt: skip
    if n_new:
        job.report(2, 4, f"generating {n_new} tokens before")
        gen_kw = {"max_new_tokens": n_new, "temperature": r["temperature"], "seed": r["seed"], "mode": r["mode"]}
        result["generation_before"] = model.generate(prompt, [], **gen_kw).text
        job.report(3, 4, f"generating {n_new} tokens after")
        result["generation_after"] = model.generate(prompt, edits + generated_edits, **gen_kw).text
    else:
        result["generation_before"] = result["generation_after"] = None
    job.report(4, 4, "done")
    return result


def check_intervention(body: dict, graph_row) -> dict:
    if not isinstance(body.get("graph"), str):
        raise ValueError("graph must be the id of the graph to intervene on")
    items = body.get("interventions")
    if not isinstance(items, list) or not items:
        raise ValueError("interventions must be a non-empty list of {node or supernode, mode, value}")
    clean = []
    for i, spec in enumerate(items):
        if not isinstance(spec, dict) or ("node" in spec) == ("supernode" in spec):
            raise ValueError(f"interventions[{i}] needs exactly one of node (an id) or supernode (a list of ids)")
        if "supernode" in spec and not (isinstance(spec["supernode"], list) and spec["supernode"]):
            raise ValueError(f"interventions[{i}].supernode must be a non-empty list of node ids")
        if spec.get("mode") not in ("set", "scale"):
            raise ValueError(f"interventions[{i}].mode must be 'set' or 'scale', got {spec.get('mode')!r}")
        if not isinstance(spec.get("value"), (int, float)) or isinstance(spec.get("value"), bool):
            raise ValueError(f"interventions[{i}].value must be a number")
        positions = spec.get("positions")
        if positions is not None and not (isinstance(positions, list) and all(isinstance(p, int) for p in positions)):
            raise ValueError(f"interventions[{i}].positions must be a list of token positions or absent")
        clean.append(
            {k: spec[k] for k in ("node", "supernode", "mode", "value", "positions", "generated") if k in spec}
        )
    mode = body.get("mode", "free")
    if mode not in ("free", "frozen_attention", "constrained"):
        raise ValueError(f"mode must be free, frozen_attention or constrained, got {mode!r}")
    n_new = body.get("max_new_tokens", 0)
    if not isinstance(n_new, int) or not 0 <= n_new <= MAX_NEW_TOKENS:
        raise ValueError(f"max_new_tokens must be an integer from 0 to {MAX_NEW_TOKENS}")
    top_k = body.get("top_k", 5)
    if not isinstance(top_k, int) or not 1 <= top_k <= 100:
        raise ValueError("top_k must be an integer from 1 to 100")
    seed = body.get("seed", 0)
    if not isinstance(seed, int):
        raise ValueError("seed must be an integer")
    temperature = body.get("temperature", 0.0)
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise ValueError("temperature must be a number >= 0")
    return {"graph": body["graph"], "interventions": clean, "mode": mode, "max_new_tokens": n_new, "top_k": top_k,
            "seed": seed, "temperature": float(temperature), "supernodes": body.get("supernodes") or [],
            "watch": body.get("watch") or [], "model": body.get("model"), "transcoders": body.get("transcoders")}  # fmt: skip


def add_job_routes(app: FastAPI, graph_row) -> None:
    queue: JobQueue = app.state.jobs

    def get_job(jid: str) -> Job:
        job = queue.jobs.get(jid)
        if job is None:
            raise NotFound(f"no job {jid!r} (jobs live while the server runs)")
        return job

    @app.post("/api/jobs/trace", status_code=202)
    def trace(body: dict) -> dict:
        job = queue.submit("trace", check_trace(body))
        return {"job": job.id} | queue.describe(job)

    @app.post("/api/jobs/intervene", status_code=202)
    def intervene(body: dict, session: DB) -> dict:
        request = check_intervention(body, graph_row)
        graph_row(session, request["graph"])
        job = queue.submit("intervene", request)
        return {"job": job.id} | queue.describe(job)

    @app.get("/api/jobs/{jid}")
    def job_status(jid: str) -> dict:
        return queue.describe(get_job(jid))

    @app.delete("/api/jobs/{jid}")
    def cancel(jid: str) -> dict:
        job = get_job(jid)
        queue.cancel(job)
        return queue.describe(job)

    @app.get("/api/jobs/{jid}/events")
    async def events(jid: str, request: Request) -> StreamingResponse:
        job = get_job(jid)

        async def stream():
            sent = 0
            while True:
                while sent < len(job.events):
                    event, data = job.events[sent]
                    sent += 1
                    yield f"event: {event}\ndata: {json.dumps(data)}\n\n"
                    if event == "done":
                        return
                if await request.is_disconnected():
                    return
                await asyncio.sleep(0.05)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.get("/api/graphs/{gid}/runs")
    def runs(session: DB, gid: str) -> list[dict]:
        """Finished interventions on this graph, newest first (request + result), kept in the database."""
        from sqlalchemy import select

        graph_row(session, gid)
        rows = session.scalars(select(JobRow).where(JobRow.graph_id == gid, JobRow.kind == "intervene",
                                                    JobRow.state == "done").order_by(JobRow.created.desc())).all()  # fmt: skip
        return [{"job": r.id, "created": r.created, "finished": r.finished, "request": r.request, "result": r.result}
                for r in rows]  # fmt: skip

    @app.get("/api/models")
    def models() -> dict:
        from circuit_atlas.zoo import MODELS, TRANSCODERS

        return {"loaded": queue.models.loaded(), "configured": [{"model": m, "transcoders": t} for m, t in
                                                                zip(queue.config.models, queue.config.transcoders)],
                "zoo": {"models": sorted(MODELS), "transcoders": sorted(TRANSCODERS)}}  # fmt: skip

    @app.post("/api/tokenize")
    def tokenize(body: dict) -> dict:
        if not isinstance(body.get("text"), str):
            raise ValueError("text must be a string")
        model = queue.models.get(str(body.get("model") or "toyworld"), str(body.get("transcoders") or "toyworld-clt"))
        ids = model.tokenize(body["text"])
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        return {"tokens": [model.tokenizer.decode([i]) for i in ids], "ids": ids}
