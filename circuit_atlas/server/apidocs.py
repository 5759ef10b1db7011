"""/docs: the OpenAPI description rendered as one plain HTML page on the server, so it works offline
(FastAPI's Swagger UI, which loads its scripts from a CDN, stays at /docs/swagger). Every string from
the spec is HTML-escaped."""

from __future__ import annotations

from html import escape

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

STYLE = ("body{font:14px/1.45 system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}"
         "h2{margin-top:1.6em;border-bottom:1px solid #ddd}code{background:#f4f4f4;padding:0 .25em}"
         ".m{display:inline-block;width:4.5em;font-weight:600}.op{margin:.8em 0}.d{margin:.2em 0 0 5em;color:#444;"
         "white-space:pre-wrap}.p{margin:.2em 0 0 5em;color:#666}")  # fmt: skip


def render(spec: dict) -> str:
    parts = [f"<!doctype html><meta charset=utf-8><title>{escape(spec['info']['title'])} API</title>",
             f"<style>{STYLE}</style><h1>{escape(spec['info']['title'])} <small>v{escape(spec['info']['version'])}</small></h1>",
             f"<p>{escape(spec['info'].get('description', ''))}</p>",
             "<p>Machine-readable: <a href=/openapi.json>/openapi.json</a>. Interactive (needs internet): "
             "<a href=/docs/swagger>/docs/swagger</a>.</p>"]  # fmt: skip
    groups: dict[str, list[str]] = {}
    for path, ops in spec["paths"].items():
        section = path.split("/")[2] if path.startswith("/api/") else "page"
        for method, op in ops.items():
            params = ", ".join(f"{p['name']} ({p['in']}{', required' if p.get('required') else ''})"
                               for p in op.get("parameters", []))  # fmt: skip
            body = " + JSON body" if "requestBody" in op else ""
            html = (f"<div class=op><span class=m>{escape(method.upper())}</span><code>{escape(path)}</code>"
                    f" — {escape(op.get('summary', ''))}")  # fmt: skip
            if op.get("description"):
                html += f"<div class=d>{escape(op['description'])}</div>"
            if params or body:
                html += f"<div class=p>parameters: {escape(params or '—')}{escape(body)}</div>"
            groups.setdefault(section, []).append(html + "</div>")
    for section, items in groups.items():
        parts.append(f"<h2>{escape(section)}</h2>" + "".join(items))
    return "".join(parts)


def add_docs(app: FastAPI) -> None:
    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(render(app.openapi()))

    @app.get("/docs/swagger", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} (Swagger UI)")
