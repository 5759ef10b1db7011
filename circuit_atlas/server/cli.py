"""`circuit-atlas serve`: the graph server on one process (uvicorn)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import ServerConfig, help_of


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("serve", help="run the graph server (library, viewer page, labels, share links, jobs)")
    p.add_argument("--data", default=ServerConfig.data, help=help_of("data"))
    p.add_argument("--db", default=None, help=help_of("db"))
    p.add_argument("--host", default=ServerConfig.host, help=help_of("host"))
    p.add_argument("--port", type=int, default=ServerConfig.port, help=help_of("port"))
    p.add_argument("--token", default=None, help=help_of("token"))
    p.add_argument("--public-reads", action="store_true", help=help_of("public_reads"))
    p.add_argument("--model", dest="models", action="append", default=[], help=help_of("models"))
    p.add_argument("--transcoders", action="append", default=[], help=help_of("transcoders"))
    p.add_argument("--max-request-kb", type=int, default=ServerConfig.max_request_kb, help=help_of("max_request_kb"))
    p.add_argument("--max-upload-mb", type=int, default=ServerConfig.max_upload_mb, help=help_of("max_upload_mb"))
    p.add_argument("--job-concurrency", type=int, default=ServerConfig.job_concurrency, help=help_of("job_concurrency"))
    p.add_argument("--cache-graphs", type=int, default=ServerConfig.cache_graphs, help=help_of("cache_graphs"))
    p.add_argument("--import", dest="imports", action="append", default=[], help=help_of("imports"))
    p.add_argument(
        "--import-only",
        action="store_true",
        help="import the --import paths into the library (data folder / --db), then exit without serving",
    )
    p.add_argument("--no-browser", action="store_true", help="do not open a browser (the default never opens one)")
    p.set_defaults(func=run)
    return p


def config_from_args(args) -> ServerConfig:
    names = ("data", "db", "host", "port", "token", "public_reads", "models", "transcoders", "max_request_kb",
             "max_upload_mb", "job_concurrency", "cache_graphs", "imports")  # fmt: skip
    return ServerConfig(**{n: getattr(args, n) for n in names}).finalize()


def import_paths(app, paths: list[str]) -> list[dict]:
    """Import files / graph_file_dir folders named on the command line (trusted local paths)."""
    from . import library

    out = []
    Sessions = app.state.sessions
    for raw in paths:
        path = Path(raw).expanduser()
        with Sessions() as session:
            if path.is_dir():
                out += app.state.import_folder(session, path, reuse=True)
            elif path.is_file():
                graph, fmt = library.parse_upload(path.read_bytes(), path.name)
                out.append(app.state.store(graph, path.stem, [], f"file:{fmt}", session, reuse=True))
            else:
                raise FileNotFoundError(f"--import {raw}: no such file or folder")
    return out


def _print_imports(entries: list[dict]) -> None:
    for entry in entries:
        why = f": {entry['missing_reason']}" if entry.get("missing_reason") else ""
        print(f"imported {entry['name']!r} as {entry['id']} ({entry['state']}{why})", flush=True)


def import_only(config: ServerConfig) -> int:
    """`serve --import PATH --import-only`: fill the library and exit (scripts, clusters without a browser)."""
    from .app import create_app

    if not config.imports:
        raise ValueError("--import-only needs at least one --import PATH")
    app = create_app(config)
    try:
        entries = import_paths(app, config.imports)
    finally:
        app.state.engine.dispose()
    _print_imports(entries)
    ok = sum(e["state"] == "ok" for e in entries)
    where = f"{config.data_dir} and the --db database" if config.db else str(config.data_dir)
    again = f"circuit-atlas serve --data {config.data}" + (" --db URL" if config.db else "")
    print(f"circuit-atlas serve: {ok} of {len(entries)} entries imported as graphs into {where}; serve them with: "
          f"{again}", flush=True)  # fmt: skip
    return 0


def serve(config: ServerConfig, imports: list[str] | None = None) -> int:
    import uvicorn

    from .app import create_app

    app = create_app(config)
    app.state.jobs.preload()
    _print_imports(import_paths(app, imports if imports is not None else config.imports))
    url = f"http://{config.host}:{config.port}/"
    print(f"circuit-atlas serve: {url}  (API docs at {url}docs; data in {config.data_dir})", flush=True)
    if config.token:
        print(f"circuit-atlas serve: token for writes: {config.token}", flush=True)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", timeout_graceful_shutdown=2)
    return 0


def run(args) -> int:
    try:
        config = config_from_args(args)
        if args.import_only:
            return import_only(config)
    except (ValueError, FileNotFoundError) as exc:
        print(f"circuit-atlas serve: error: {exc}", file=sys.stderr)
        return 2
    return serve(config)
