"""The ASGI app: create_app(config) -> FastAPI. Routes are documented in notes/api.md and at /docs.

Every route is a thin shell: parse and validate, call library / views / labels / sharing /
exporting / jobs, answer JSON. Errors are {"detail": "one sentence"}: 404 unknown graph or node,
409 edit conflict, 413 too large, 422 bad input, 401 missing token.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from . import batch_import, exporting, labels, library, sharing, views
from .apidocs import add_docs
from .config import ServerConfig
from .db import GraphRow, ViewRow, make_engine, sessions, upgrade
from .deps import DB, NotFound
from .security import SAFE_ID, GuardMiddleware, safe_child

STATIC = Path(__file__).parent / "static"
VERSION = "1"


def create_app(config: ServerConfig) -> FastAPI:
    config.finalize()
    data_dir = config.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "imports").mkdir(exist_ok=True)
    engine = make_engine(config.database_url)
    upgrade(engine)
    Sessions = sessions(engine)
    cache = views.GraphCache(data_dir, config.cache_graphs)

    app = FastAPI(title="circuit-atlas graph server", version=VERSION, redirect_slashes=False, docs_url=None,
                  description="A self-hosted library of attribution graphs: views by query, labels, supernodes, "
                              "saved views, share links and live jobs. The contract is notes/api.md.")  # fmt: skip
    app.state.config, app.state.engine, app.state.sessions, app.state.cache = config, engine, Sessions, cache
    app.add_middleware(GuardMiddleware, token=config.token, public_reads=config.public_reads,
                       max_request=config.max_request_kb * 1024, max_upload=config.max_upload_mb * 1024 * 1024)  # fmt: skip

    from .jobs import JobQueue, add_job_routes

    app.state.jobs = JobQueue(config, Sessions, lambda: app)

    @app.exception_handler(ValueError)
    async def _bad_input(_req, exc: ValueError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(NotFound)
    async def _not_found(_req, exc: NotFound):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(labels.Conflict)
    async def _conflict(_req, exc: labels.Conflict):
        return JSONResponse({"detail": str(exc), "current": exc.current}, status_code=409)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x not in ("body", "query", "path"))
        return JSONResponse({"detail": f"{where or 'request'}: {first.get('msg', 'invalid')}"}, status_code=422)

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    def graph_row(session: Session, gid: str) -> GraphRow:
        row = session.get(GraphRow, gid) if SAFE_ID.match(gid) else None
        if row is None:
            raise NotFound(f"no graph {gid!r} in this library (GET /api/graphs lists them)")
        return row

    def loaded(session: Session, gid: str) -> tuple[GraphRow, views.LoadedGraph]:
        row = graph_row(session, gid)
        if row.state != "ok" or not row.sha256:
            raise NotFound(f"graph {gid!r} is listed but its file is missing: {row.meta.get('missing_reason')}")
        return row, cache.get(row.id, row.sha256)

    def node_index(lg: views.LoadedGraph, node: str) -> int:
        try:
            return lg.nodes.resolve(node)
        except KeyError as exc:
            raise NotFound(exc.args[0]) from None

    def current_labels(session, row, lg):
        return labels.current_labels(session, row.id, row.transcoders, lg.nodes)

    app.state.helpers = {"loaded": loaded, "current_labels": current_labels}

    # --- library -----------------------------------------------------------------------
    @app.get("/api/health")
    def health() -> dict:
        return {"status": "ok", "version": VERSION, "protected": config.protected, "public_reads": config.public_reads,
                "limits": {"max_request_bytes": config.max_request_kb * 1024,
                           "max_upload_bytes": config.max_upload_mb * 1024 * 1024,
                           "job_concurrency": config.job_concurrency}}  # fmt: skip

    def _store(graph, name, tags, source, session, reuse: bool = False) -> dict:
        row = library.store_graph(session, data_dir, graph, name=name, tags=tags, source=source, reuse=reuse)
        if row.meta.get("view_code") is None:
            initial_view(session, row, graph)
        session.commit()
        return library.summary(row) | {"n_links": row.n_links, "view": row.meta.get("view_code")}

    def initial_view(session: Session, row: GraphRow, graph) -> None:
        """An imported file's saved view (its qParams) becomes the graph's first state and a share link."""
        q = (graph.metadata.get("circuit_tracer_json") or {}).get("qParams") or {}
        if not (q.get("pinnedIds") or q.get("supernodes")):
            return
        from .nodes import NodeTable

        state, unknown = sharing.from_url_params(NodeTable(graph), q, strict=False)
        session.add(labels.StateRow(graph_id=row.id, version=1, data=labels.DEFAULT_STATE | state, client="import"))
        view = sharing.ViewRow(code=sharing.new_code(), graph_id=row.id, data=state, created=row.created)
        session.add(view)
        row.meta = dict(row.meta) | {"view_code": view.code, "view_unknown_ids": unknown}

    @app.post("/api/graphs", status_code=201)
    async def import_graph(request: Request) -> dict:
        ctype = request.headers.get("content-type", "")
        name, tags, filename = request.query_params.get("name"), _tags(request.query_params.get("tags")), ""
        if ctype.startswith("multipart/form-data"):
            form = await request.form()
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ValueError("multipart upload needs a 'file' field with the graph (.json or .safetensors)")
            raw, filename = await upload.read(), upload.filename or ""
            name = str(form.get("name") or name or "") or None
            tags = _tags(form.get("tags")) or tags
        else:
            raw = await request.body()
        if not raw:
            raise ValueError("empty body: send graph JSON, or a multipart 'file' field")

        def work() -> dict:
            graph, fmt = library.parse_upload(raw, filename)
            with Sessions() as session:
                return _store(graph, name or (Path(filename).stem if filename else None), tags, f"upload:{fmt}",
                              session)  # fmt: skip

        return await run_in_threadpool(work)

    @app.post("/api/graphs/import-dir", status_code=201)
    def import_dir(body: dict, session: DB) -> dict:
        """Import a graph_file_dir or trace-batch folder that lies under DATA/imports/ (path relative to it)."""
        rel = body.get("path")
        if not isinstance(rel, str):
            raise ValueError("path must be a folder name under the data folder's imports/ directory")
        folder = safe_child(data_dir / "imports", rel)
        if folder is None or not folder.is_dir():
            raise ValueError(f"path {rel!r} is not a folder inside the data folder's imports/ directory")
        return {"graphs": import_folder(session, folder)}

    def import_folder(session: Session, folder: Path, reuse: bool = False) -> list[dict]:
        if batch_import.is_batch_folder(folder):  # a `trace-batch` output folder (manifest.json)
            return batch_import.import_batch(session, folder, _store, reuse=reuse)
        out = []
        for slug, path, entry, reason in library.read_graph_dir(folder):
            if path is None:
                known = library.list_graphs(session, q="") if reuse else []
                row = next((r for r in known if r.state == "missing" and r.name == slug), None)
                row = row or library.missing_row(session, slug, f"dir:{folder.name}", entry, reason)
                session.commit()
                out.append(library.summary(row))
                continue
            graph = library.graph_from_json(json.loads(path.read_text(encoding="utf-8")))
            out.append(_store(graph, slug, [], f"dir:{folder.name}", session, reuse=reuse))
        return out

    app.state.import_folder = import_folder
    app.state.store = _store

    @app.get("/api/graphs")
    def list_graphs(session: DB, q: str = "", model: str = "", transcoders: str = "", feature: str = "", tag: str = "",
                    slug: str = "") -> list[dict]:  # fmt: skip
        rows = library.list_graphs(session, q=q, model=model, transcoders=transcoders, feature=feature, tag=tag)
        if slug:
            rows = [r for r in rows if r.id == slug or (r.meta or {}).get("slug") == slug or r.name == slug]
        return [library.summary(r) for r in rows]

    @app.get("/api/graphs/{gid}")
    def get_graph(gid: str, session: DB) -> dict:
        row = graph_row(session, gid)
        meta = row.meta or {}
        out = library.summary(row) | {k: meta.get(k) for k in ("tokens", "n_layers", "scores", "node_threshold",
                                                               "edge_threshold", "slug", "dialect", "import_warnings",
                                                               "counts", "view_code")}  # fmt: skip
        out["view_url"] = f"/v/{meta['view_code']}" if meta.get("view_code") else None
        out["dashboards"] = None  # the name /api/features/{name}/... answers for this graph's features
        if row.state == "ok" and row.sha256:
            from .dashboards import dashboards_dir

            name = loaded(session, gid)[1].graph.metadata.get("transcoders")
            out["dashboards"] = name if dashboards_dir(data_dir, name) is not None else None
        return out

    @app.patch("/api/graphs/{gid}")
    def patch_graph(gid: str, body: dict, session: DB) -> dict:
        row = graph_row(session, gid)
        unknown = set(body) - {"name", "tags"}
        if unknown:
            raise ValueError(f"unknown field(s) {sorted(unknown)}; PATCH takes name and tags")
        if "name" in body:
            if not isinstance(body["name"], str) or not body["name"].strip() or len(body["name"]) > 500:
                raise ValueError("name must be a non-empty string of at most 500 characters")
            row.name = body["name"].strip()
            row.search = f"{row.name}\n{row.prompt}".lower()
        if "tags" in body:
            tags = body["tags"]
            if not isinstance(tags, list) or not all(isinstance(t, str) and 0 < len(t) <= 100 for t in tags):
                raise ValueError("tags must be a list of strings (1-100 characters each)")
            row.tags = list(dict.fromkeys(tags))
        import time

        row.updated = time.time()
        session.commit()
        return library.summary(row)

    @app.delete("/api/graphs/{gid}", status_code=204)
    def delete_graph(gid: str, session: DB) -> Response:
        row = graph_row(session, gid)
        library.delete_graph(session, data_dir, row)
        session.commit()
        cache.drop(gid)
        return Response(status_code=204)

    # --- views -------------------------------------------------------------------------
    def _threshold(value: float | None, default: float, name: str) -> float:
        v = default if value is None else value
        if not 0 < v <= 1:
            raise ValueError(f"{name} must be in (0, 1], got {v}")
        return float(v)

    @app.get("/api/graphs/{gid}/view")
    def view(session: DB, gid: str, node_threshold: float | None = None, edge_threshold: float | None = None, keep: str = "") -> dict:  # fmt: skip
        row, lg = loaded(session, gid)
        nt = _threshold(node_threshold, row.meta.get("node_threshold", 0.8), "node_threshold")
        et = _threshold(edge_threshold, row.meta.get("edge_threshold", 0.98), "edge_threshold")
        keep_idx = [node_index(lg, k) for k in keep.split(",") if k.strip()]
        return JSONResponse(views.pruned_view(lg, nt, et, keep_idx, current_labels(session, row, lg)))  # no re-encoding

    @app.get("/api/graphs/{gid}/nodes/{node}/edges")
    def edges(session: DB, gid: str, node: str, direction: str = "in", k: int = Query(50, ge=1, le=10000)) -> dict:
        if direction not in ("in", "out"):
            raise ValueError(f"direction must be 'in' or 'out', got {direction!r}")
        row, lg = loaded(session, gid)
        i = node_index(lg, node)
        labs = current_labels(session, row, lg)
        return JSONResponse({"node": views.node_json(lg, i, labs), "direction": direction,
                             "edges": views.node_edges(lg, i, direction, k, labs)})  # fmt: skip

    @app.post("/api/graphs/{gid}/subgraph")
    def subgraph(gid: str, body: dict, session: DB) -> dict:
        row, lg = loaded(session, gid)
        state, _ = sharing.normalize_state(lg.nodes, {k: body.get(k, []) for k in ("pinned", "supernodes")})
        idx = lg.nodes.index
        groups = [(g[0], [idx[x] for x in g[1:]]) for g in state["supernodes"]]
        return JSONResponse(views.subgraph(lg, [idx[x] for x in state["pinned"]], groups,
                                           current_labels(session, row, lg), row.meta.get("scores")))  # fmt: skip

    @app.get("/api/graphs/{gid}/search")
    def search_nodes(session: DB, gid: str, q: str, limit: int = Query(50, ge=1, le=1000)):
        row, lg = loaded(session, gid)
        labs = current_labels(session, row, lg)
        needle = q.strip().lower()
        layer = re.fullmatch(r"l(\d+)", needle)
        hits = []
        for i in range(lg.nodes.n):
            nt = lg.nodes
            label = labs[i]["text"] if i in labs else nt.auto_labels[i]
            if layer:
                ok = nt.layer[i] == int(layer.group(1))
            else:
                ok = (
                    needle in label.lower()
                    or needle in nt.ids[i]
                    or needle == nt.np_ids[i].lower()
                    or (needle in nt.token[i].lower() and nt.kinds[i] in ("embedding", "logit"))
                )
            if ok:
                hits.append(i)
        hits.sort(key=lambda i: -float(lg.influence[i]))
        return {"nodes": [views.node_json(lg, i, labs) for i in hits[:limit]], "total": len(hits)}

    @app.post("/api/graphs/{gid}/resolve")
    def resolve(gid: str, body: dict, session: DB) -> dict:
        _, lg = loaded(session, gid)
        ids = body.get("ids")
        if not isinstance(ids, list):
            raise ValueError("ids must be a list of node ids")
        out = {}
        for x in ids:
            try:
                out[str(x)] = lg.nodes.ids[lg.nodes.resolve(str(x))]
            except KeyError:
                out[str(x)] = None
        return {"ids": out}

    # --- labels ------------------------------------------------------------------------
    @app.get("/api/graphs/{gid}/labels")
    def get_labels(gid: str, session: DB) -> dict:
        row, lg = loaded(session, gid)
        labs = current_labels(session, row, lg)
        return {lg.nodes.ids[i]: v | {"auto_label": lg.nodes.auto_labels[i]} for i, v in labs.items()}

    @app.put("/api/graphs/{gid}/labels/{node}")
    def put_label(gid: str, node: str, body: dict, request: Request, session: DB) -> dict:
        row, lg = loaded(session, gid)
        i = node_index(lg, node)
        if not isinstance(body.get("text"), str):
            raise ValueError("text must be a string (DELETE the label to go back to the automatic one)")
        base = body.get("base_version")
        if base is not None and not isinstance(base, int):
            raise ValueError("base_version must be an integer (the version you edited) or absent")
        return labels.put_label(session, row.id, row.transcoders, lg.nodes, i, body["text"],
                                body.get("scope", "node"), base, _client(request, body))  # fmt: skip

    @app.delete("/api/graphs/{gid}/labels/{node}")
    def delete_label(session: DB, gid: str, node: str, request: Request, scope: str = "node"):
        row, lg = loaded(session, gid)
        i = node_index(lg, node)
        return labels.put_label(session, row.id, row.transcoders, lg.nodes, i, None, scope, None,
                                _client(request, {}))  # fmt: skip

    @app.get("/api/graphs/{gid}/labels/{node}/history")
    def label_history(gid: str, node: str, session: DB) -> list[dict]:
        row, lg = loaded(session, gid)
        return labels.history(session, row.id, row.transcoders, lg.nodes, node_index(lg, node))

    # --- state -------------------------------------------------------------------------
    @app.get("/api/graphs/{gid}/state")
    def get_state(gid: str, session: DB) -> dict:
        graph_row(session, gid)
        return labels.get_state(session, gid)

    @app.put("/api/graphs/{gid}/state")
    def put_state(gid: str, body: dict, request: Request, session: DB) -> dict:
        row, lg = loaded(session, gid)
        patch, _ = sharing.normalize_state(lg.nodes, body)
        patch.pop("labels", None)
        base = body.get("base_version")
        if base is not None and not isinstance(base, int):
            raise ValueError("base_version must be an integer or absent")
        return labels.put_state(session, row.id, patch, base, _client(request, body))

    @app.get("/api/graphs/{gid}/state/history")
    def get_state_history(gid: str, session: DB) -> list[dict]:
        graph_row(session, gid)
        return labels.state_history(session, gid)

    @app.post("/api/graphs/{gid}/state/restore/{version}")
    def restore_state(gid: str, version: int, request: Request, session: DB) -> dict:
        graph_row(session, gid)
        old = labels.state_at(session, gid, version)
        if old is None:
            raise NotFound(f"graph {gid!r} has no state version {version}")
        data = {k: old[k] for k in labels.DEFAULT_STATE}
        return labels.put_state(session, gid, data, None, _client(request, {}), replace=True)

    # --- sharing -----------------------------------------------------------------------
    @app.post("/api/graphs/{gid}/views", status_code=201)
    def save_view(gid: str, body: dict, session: DB) -> dict:
        row, lg = loaded(session, gid)
        data, _ = sharing.normalize_state(lg.nodes, body)
        if "labels" not in data:  # default: the labels the user sees now
            labs = current_labels(session, row, lg)
            data["labels"] = {lg.nodes.ids[i]: v["text"] for i, v in labs.items()}
        return sharing.view_json(sharing.create_view(session, gid, data))

    @app.get("/api/views/{code}")
    def get_view(code: str, session: DB) -> dict:
        row = session.get(ViewRow, code) if SAFE_ID.match(code) else None
        if row is None:
            raise NotFound(f"no saved view {code!r}")
        return sharing.view_json(row)

    @app.get("/api/open")
    def open_url(request: Request, session: DB) -> dict:
        """Neuronpedia's long URL form (?slug=&pinnedIds=&supernodes=&clerps=&pruningThreshold=) as a view."""
        params = dict(request.query_params)
        slug = params.get("slug", "")
        rows = [r for r in library.list_graphs(session) if slug and (r.id == slug or (r.meta or {}).get("slug") == slug
                                                                   or r.name == slug)]  # fmt: skip
        if not rows:
            raise NotFound(f"no graph with slug or id {slug!r}")
        row, lg = loaded(session, rows[0].id)
        view_data, _ = sharing.from_url_params(lg.nodes, params)
        return view_data | {"graph": row.id}

    # --- export ------------------------------------------------------------------------
    @app.get("/api/graphs/{gid}/export.json")
    def export_json(gid: str, session: DB) -> JSONResponse:
        row, lg = loaded(session, gid)
        slug = (row.meta or {}).get("slug") or row.id
        data = exporting.graph_json(lg, slug, current_labels(session, row, lg), labels.get_state(session, gid))
        return JSONResponse(data, headers={"Content-Disposition": f'attachment; filename="{row.id}.json"'})

    @app.get("/api/graphs/{gid}/export.csv")
    def export_csv(session: DB, gid: str, what: str = "nodes") -> Response:
        row, lg = loaded(session, gid)
        if what not in ("nodes", "edges"):
            raise ValueError(f"what must be 'nodes' or 'edges', got {what!r}")
        text = exporting.nodes_csv(lg, current_labels(session, row, lg)) if what == "nodes" else exporting.edges_csv(lg)
        return Response(text, media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{row.id}-{what}.csv"'})  # fmt: skip

    @app.get("/api/features/{transcoders}/search")
    def feature_search(transcoders: str, label: str | None = None, fires_on: str | None = None,
                       promotes: str | None = None, limit: int = 20) -> dict:  # fmt: skip
        """Features by label text, by a token they fire on, or by a token they promote ("which promote ' Austin'?")."""
        from .dashboards import search_features

        if not 1 <= limit <= 500:
            raise ValueError(f"limit must be between 1 and 500, got {limit}")
        try:
            hits = search_features(data_dir, transcoders, label=label, fires_on=fires_on, promotes=promotes,
                                   limit=limit)  # fmt: skip
        except FileNotFoundError as exc:
            raise NotFound(str(exc)) from None
        return {"transcoders": transcoders, "features": hits}

    @app.get("/api/features/{transcoders}/{layer}/{index}")
    def feature_dashboard(transcoders: str, layer: int, index: int) -> dict:
        """One feature's dashboard as circuit-tracer / Neuronpedia feature JSON (404 when none is built)."""
        from .dashboards import feature_json

        try:
            return feature_json(data_dir, transcoders, layer, index)
        except FileNotFoundError as exc:
            raise NotFound(str(exc)) from None

    add_job_routes(app, graph_row)
    add_docs(app)

    # --- the page ----------------------------------------------------------------------
    def page() -> Response:
        index = STATIC / "index.html"
        if not index.is_file():
            return JSONResponse({"detail": "the viewer page is not installed (static/index.html missing)"}, 404)
        return FileResponse(index, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"})

    @app.get("/", include_in_schema=False)
    def root() -> Response:
        return page()

    @app.get("/graphs/{gid}", include_in_schema=False)
    def graph_page(gid: str) -> Response:
        return page()

    @app.get("/v/{code}", include_in_schema=False)
    def view_page(code: str) -> Response:
        return page()

    STATIC.mkdir(exist_ok=True)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    def unknown_api(rest: str) -> JSONResponse:
        return JSONResponse({"detail": f"no API route /api/{rest} (see /docs)"}, status_code=404)

    return app


def _tags(value: Any) -> list[str]:
    if not value:
        return []
    return [t.strip() for t in str(value).split(",") if t.strip()]


def _client(request: Request, body: dict) -> str | None:
    client = body.get("client") or request.headers.get("x-client")
    return str(client)[:128] if client else None
