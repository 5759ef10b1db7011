"""The dashboards file: one SQLite database, versioned, compact, written atomically.

    DIR/dashboards.sqlite
        meta(key, value)                 format, version, info (JSON: model, transcoders, corpus, settings),
                                         zdict (the zlib preset dictionary every record is compressed with)
        tokens(id, text)                 the token strings the dashboards mention
        features(layer, idx, count, max_act, label, data)
                                         data: zlib-compressed JSON (with zdict) of the feature's statistics (RECORD)
        fires(token, layer, idx, weight) top-example max tokens (weight: share of top examples), for search
        promotes(token, layer, idx, value) promoted tokens (summed logit effect), for search
    DIR/labels.json                      person-written labels (labels.py), never touched by a build

RECORD (per feature): n (active count), sum, hist [first bin, counts...], top / sample: examples as
[order, value, lead, token ids, sparse acts [[i, v], ...]] where the context starts `lead` tokens
into the stored C-token frame (so the example's token is at context_before - lead), and effects as
[[token id, value], ...] lists (4 significant digits). Activations are float32, written in their shortest
exact form.
"""

from __future__ import annotations

import json
import os
import sqlite3
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .dashboard import Band, Example, FeatureDashboard
from .labels import automatic_label, read_labels
from .stats import EDGES, N_BINS, quantile_from_hist

DB_FILE = "dashboards.sqlite"
FORMAT, VERSION = "circuit-atlas-dashboards", 1
SEARCH_PROMOTED = 5  # promoted tokens per feature in the search table
QUANTILE_LEVELS = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999)
SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tokens (id INTEGER PRIMARY KEY, text TEXT NOT NULL);
CREATE TABLE features (layer INTEGER NOT NULL, idx INTEGER NOT NULL, count INTEGER NOT NULL, max_act REAL NOT NULL,
                       label TEXT NOT NULL, data BLOB NOT NULL, PRIMARY KEY (layer, idx));
CREATE TABLE fires (token INTEGER NOT NULL, layer INTEGER NOT NULL, idx INTEGER NOT NULL, weight REAL NOT NULL,
                    PRIMARY KEY (token, layer, idx)) WITHOUT ROWID;
CREATE TABLE promotes (token INTEGER NOT NULL, layer INTEGER NOT NULL, idx INTEGER NOT NULL, value REAL NOT NULL,
                       PRIMARY KEY (token, layer, idx)) WITHOUT ROWID;
"""


def _floats(t: torch.Tensor) -> list[float]:
    """Float32 values as the shortest decimals that read back as the same float32 (vectorised)."""
    return t.detach().cpu().float().numpy().astype(str).astype(np.float64).tolist()


# --- writing -----------------------------------------------------------------------------------
def _rows(sel, f: torch.Tensor, k: torch.Tensor, values: list[float]) -> list[list]:
    """RECORD rows [order, value, lead, ids, sparse acts] of the examples (f[i], k[i]) of a Selection."""
    toks, acts = sel.tokens[f, k], sel.acts[f, k]  # (N, C)
    valid = toks >= 0
    lead = valid.int().argmax(1).tolist()
    length = valid.sum(1).tolist()
    nz = (acts != 0).nonzero()  # (M, 2) row-major: grouped by example
    nz_vals = _floats(acts[nz[:, 0], nz[:, 1]])
    sparse: list[list] = [[] for _ in range(len(f))]
    for (i, c), v in zip(nz.tolist(), nz_vals):
        sparse[i].append([c - lead[i], v])
    orders, ids = sel.order[f, k].tolist(), toks.tolist()
    return [[orders[i], values[i], lead[i], ids[i][lead[i] : lead[i] + length[i]], sparse[i]] for i in range(len(f))]


def _band_choice(stats, cuts: list[list[float]], n_per_band: int) -> tuple[list[int], list[int]]:
    """(features, slots) of the sampled examples shown: per band the highest n_per_band, top examples excluded."""
    sample = stats.sample
    centre = sample.acts[:, :, stats.before].tolist()  # (F, R) the example's own activation
    filled = (sample.score > -torch.inf).tolist()
    s_orders, t_orders = sample.order.tolist(), stats.top.order.tolist()
    fs, ks = [], []
    for f in range(stats.F):
        shown = set(t_orders[f])
        cand = sorted((-centre[f][k], s_orders[f][k], k) for k in range(len(filled[f])) if filled[f][k]
                      and s_orders[f][k] not in shown)  # fmt: skip
        c = cuts[f]
        for b in range(len(c) - 1):
            inside = [k for v, _, k in cand if c[b] <= -v < c[b + 1]][:n_per_band]
            fs += [f] * len(inside)
            ks += inside
    return fs, ks


def _pairs(ids: torch.Tensor, values: torch.Tensor) -> list[list[list]]:
    # Effects are for display and ranking: 4 significant digits keep the file small.
    vals = [float(f"{v:.4g}") for v in values.flatten().tolist()]
    n = values.shape[1]
    return [[[i, vals[r * n + j]] for j, i in enumerate(row)] for r, row in enumerate(ids.tolist())]


def band_cuts(counts: torch.Tensor, bands: int) -> list[float]:
    """Activation cut points [0, q(1/n), ..., inf] of `bands` equal-mass quantile bands."""
    cuts = [quantile_from_hist(counts, b / bands) for b in range(bands + 1)]
    cuts[0], cuts[-1] = 0.0, float("inf")
    return cuts


def layer_records(stats, effects: dict, cfg, decode) -> tuple[list[dict], list[str], set[int]]:
    """(records, automatic labels, token ids mentioned) of one layer's features."""
    F = stats.canonicalize().F
    before = cfg["context_before"]
    hist, counts, totals = stats.hist, stats.count.tolist(), stats.total.tolist()
    # top examples: every filled slot
    filled = stats.top.score > -torch.inf
    tf, tk = filled.nonzero(as_tuple=True)
    top_rows = _rows(stats.top, tf, tk, _floats(stats.top.score[tf, tk]))
    top: list[list] = [[] for _ in range(F)]
    for f, r in zip(tf.tolist(), top_rows):
        top[f].append(r)
    # band examples: chosen here, so the file holds only what is shown
    cuts = [band_cuts(hist[f], cfg["bands"]) for f in range(F)]
    bf, bk = _band_choice(stats, cuts, cfg["band_examples"])
    bf_t, bk_t = torch.tensor(bf, dtype=torch.long), torch.tensor(bk, dtype=torch.long)
    band_vals = _floats(stats.sample.acts[bf_t, bk_t, before]) if bf else []
    sample: list[list] = [[] for _ in range(F)]
    for f, r in zip(bf, _rows(stats.sample, bf_t, bk_t, band_vals) if bf else []):
        sample[f].append(r)
    eff = effects
    logits_top = _pairs(eff["logits.top_ids"], eff["logits.top"])
    logits_bottom = _pairs(eff["logits.bottom_ids"], eff["logits.bottom"])
    per_layer = {}
    for key in eff:
        if key.startswith("logits_out") and key.endswith(".top_ids"):
            name = key[: -len(".top_ids")]
            per_layer[name[len("logits_out") :]] = (_pairs(eff[f"{name}.top_ids"], eff[f"{name}.top"]),
                                                    _pairs(eff[f"{name}.bottom_ids"], eff[f"{name}.bottom"]))  # fmt: skip
    inputs = None
    if "inputs.top_ids" in eff:
        inputs = (
            _pairs(eff["inputs.top_ids"], eff["inputs.top"]),
            _pairs(eff["inputs.bottom_ids"], eff["inputs.bottom"]),
        )
    hist_l = hist.tolist()
    records, labels, mentioned = [], [], set()
    for f in range(F):
        h = hist_l[f]
        nz = [i for i, c in enumerate(h) if c]
        first, last = (nz[0], nz[-1]) if nz else (0, -1)
        rec = {"n": counts[f], "sum": totals[f], "hist": [first, h[first : last + 1]], "top": top[f],
               "sample": sample[f], "logits": {"top": logits_top[f], "bottom": logits_bottom[f]}}  # fmt: skip
        if per_layer:
            rec["logits_per_layer"] = {o: {"top": t[f], "bottom": b[f]} for o, (t, b) in per_layer.items()}
        if inputs:
            rec["inputs"] = {"top": inputs[0][f], "bottom": inputs[1][f]}
        max_ids = [r[3][before - r[2]] for r in top[f]]
        prev_ids = [r[3][before - r[2] - 1] if before - r[2] >= 2 else None for r in top[f]]  # never BOS
        label = automatic_label([decode(i) for i in max_ids], [None if p is None else decode(p) for p in prev_ids],
                                [decode(i) for i, _ in logits_top[f]])  # fmt: skip
        rec["label"] = label
        records.append(rec)
        labels.append(label)
        for r in top[f] + sample[f]:
            mentioned.update(r[3])
        for key in ("logits", "inputs"):
            for side in rec.get(key, {}).values():
                mentioned.update(i for i, _ in side)
        for sides in rec.get("logits_per_layer", {}).values():
            for side in sides.values():
                mentioned.update(i for i, _ in side)
    return records, labels, mentioned


def write_dashboards(directory: Path, info: dict, layers: list[tuple], decode) -> Path:
    """Write DIR/dashboards.sqlite from [(LayerStats, effects)] per layer; atomic (temp file + rename)."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / DB_FILE
    tmp = directory / f".{DB_FILE}.writing-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    cfg = info["config"] | {"bos": info["bos"]}
    try:
        con = sqlite3.connect(tmp)
        con.executescript(SCHEMA)
        mentioned: set[int] = set()
        zdict = None
        for layer, (stats, effects) in enumerate(layers):
            records, labels, ids = layer_records(stats, effects, cfg, decode)
            mentioned |= ids
            texts = [json.dumps(rec, separators=(",", ":"), ensure_ascii=False).encode() for rec in records]
            if zdict is None:  # a shared zlib dictionary: one feature's record is too small to compress well alone
                zdict = _dictionary(texts)
            rows, fires, promotes = [], [], []
            for f, (rec, label, text) in enumerate(zip(records, labels, texts)):
                max_act = rec["top"][0][1] if rec["top"] else 0.0
                packer = zlib.compressobj(9, zdict=zdict)
                blob = packer.compress(text) + packer.flush()
                rows.append((layer, f, rec["n"], max_act, label, blob))
                before = cfg["context_before"]
                tally: dict[int, int] = {}
                for r in rec["top"]:
                    t = r[3][before - r[2]]
                    tally[t] = tally.get(t, 0) + 1
                fires += [(t, layer, f, c / len(rec["top"])) for t, c in tally.items()]
                promotes += [(t, layer, f, v) for t, v in rec["logits"]["top"][:SEARCH_PROMOTED]]
            con.executemany("INSERT INTO features VALUES (?, ?, ?, ?, ?, ?)", rows)
            con.executemany("INSERT INTO fires VALUES (?, ?, ?, ?)", fires)
            con.executemany("INSERT INTO promotes VALUES (?, ?, ?, ?)", promotes)
        con.executemany("INSERT INTO tokens VALUES (?, ?)", [(i, decode(i)) for i in sorted(mentioned)])
        meta = {"format": FORMAT, "version": str(VERSION), "info": json.dumps(info)}
        con.executemany("INSERT INTO meta VALUES (?, ?)", list(meta.items()))
        con.execute("INSERT INTO meta VALUES ('zdict', ?)", (zdict or b"",))
        con.commit()
        con.execute("VACUUM")
        con.close()
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def _dictionary(texts: list[bytes], size: int = 32768) -> bytes:
    """zlib preset dictionary (at most 32 KiB, zlib's window) from records spread over the layer."""
    step = max(1, len(texts) // 64)
    sample = b"".join(texts[::step])
    return sample[-size:]


# --- reading -----------------------------------------------------------------------------------
class Dashboards:
    """A read-only dashboards file: one feature at a time, search, and the whole-folder export."""

    def __init__(self, directory: str | os.PathLike):
        directory = Path(directory).expanduser()
        path = directory if directory.is_file() else directory / DB_FILE
        self.directory = path.parent
        if not path.is_file():
            raise FileNotFoundError(
                f"no feature dashboards at {directory} (no {DB_FILE}); build them with "
                "`circuit-atlas features build --model M --transcoders T --data FILE --out DIR`"
            )
        try:
            self.con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            meta = dict(self.con.execute("SELECT key, value FROM meta"))
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')!r}")
            if int(meta["version"]) > VERSION:
                raise ValueError(
                    f"version {meta['version']} is newer than this circuit-atlas reads ({VERSION}); upgrade circuit-atlas"
                )
            self.info = json.loads(meta["info"])
            self.zdict = meta.get("zdict", b"")
            self.vocab = dict(self.con.execute("SELECT id, text FROM tokens"))
        except (sqlite3.DatabaseError, KeyError, ValueError, json.JSONDecodeError) as err:
            raise ValueError(
                f"{path} is not a readable circuit-atlas dashboards file ({err}); rebuild it with `circuit-atlas "
                "features build` (the corpus state, if kept, is reused)"
            ) from err
        self.user_labels = read_labels(self.directory)
        cfg = self.info["config"]
        self.before, self.seq_len, self.bands = cfg["context_before"], cfg["seq_len"], cfg["bands"]
        self.band_examples = cfg["band_examples"]

    @property
    def name(self) -> str:
        return self.info["transcoders"]

    @property
    def n_layers(self) -> int:
        return self.info["n_layers"]

    def width(self, layer: int) -> int:
        return self.info["widths"][layer]

    def token(self, i: int) -> str:
        return self.vocab.get(i, f"<{i}>")

    def _record(self, layer: int, index: int) -> dict:
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"layer {layer} is out of range: {self.name} has layers 0..{self.n_layers - 1}")
        if not 0 <= index < self.width(layer):
            raise ValueError(f"feature {index} is out of range: layer {layer} has features 0..{self.width(layer) - 1}")
        row = self.con.execute("SELECT data FROM features WHERE layer = ? AND idx = ?", (layer, index)).fetchone()
        if row is None:
            raise ValueError(
                f"{self.directory / DB_FILE} lacks feature {layer}/{index}: the file is incomplete; rebuild it"
            )
        try:
            unpacker = zlib.decompressobj(zdict=self.zdict) if self.zdict else zlib.decompressobj()
            return json.loads(unpacker.decompress(row[0]) + unpacker.flush())
        except (zlib.error, json.JSONDecodeError) as err:
            raise ValueError(
                f"the dashboard of feature {layer}/{index} in {self.directory} is corrupt ({err}); rebuild it"
            ) from err

    def _example(self, r: list, seen: set) -> Example:
        order, value, lead, ids, sparse = r
        acts = [0.0] * len(ids)
        for i, v in sparse:
            acts[i] = v
        key = tuple(ids)
        ex = Example([self.token(i) for i in ids], ids, acts, self.before - lead, value, order // self.seq_len,
                     order % self.seq_len, key in seen)  # fmt: skip
        seen.add(key)
        return ex

    def _pairs(self, pairs: list) -> list[tuple[str, float]]:
        return [(self.token(i), v) for i, v in pairs]

    def label(self, layer: int, index: int) -> tuple[str, str]:
        """(label, source): a person's label where there is one, else the automatic one."""
        if (layer, index) in self.user_labels:
            return self.user_labels[(layer, index)], "user"
        row = self.con.execute("SELECT label FROM features WHERE layer = ? AND idx = ?", (layer, index)).fetchone()
        return (row[0] if row else ""), "automatic"

    def labels(self) -> dict[tuple[int, int], str]:
        """Every feature's label (person-written ones override the automatic)."""
        out = {(l, i): t for l, i, t in self.con.execute("SELECT layer, idx, label FROM features")}
        return out | self.user_labels

    def dashboard(self, layer: int, index: int) -> FeatureDashboard:
        rec = self._record(layer, index)
        first, counts = rec["hist"]
        full = torch.zeros(N_BINS, dtype=torch.int64)
        if counts:
            full[first : first + len(counts)] = torch.tensor(counts)
        edges = [0.0] + EDGES.tolist() + [float("inf")]
        quantiles = {q: quantile_from_hist(full, q) for q in QUANTILE_LEVELS}
        seen: set = set()
        top = [self._example(r, seen) for r in rec["top"]]
        bands = [Band("Top activations", top[-1].value if top else 0.0, top[0].value if top else 0.0, top)]
        cuts = band_cuts(full, self.bands)
        samples = sorted(rec["sample"], key=lambda r: -r[1])
        for b in reversed(range(self.bands)):
            lo, hi = cuts[b], cuts[b + 1]
            rows = [r for r in samples if lo <= r[1] < hi][: self.band_examples]
            if rows:
                name = f"Quantile {round(100 * b / self.bands)}-{round(100 * (b + 1) / self.bands)}%"
                exs = [self._example(r, seen) for r in rows]
                bands.append(Band(name, min(e.value for e in exs), max(e.value for e in exs), exs))
        per_layer = {int(o): (self._pairs(s["top"]), self._pairs(s["bottom"]))
                     for o, s in rec.get("logits_per_layer", {}).items()}  # fmt: skip
        inputs = rec.get("inputs", {"top": [], "bottom": []})
        label, source = self.label(layer, index)
        n = rec["n"]
        return FeatureDashboard(
            transcoders=self.name, layer=layer, index=index, n_tokens=self.info["n_tokens"], count=n,
            mean=rec["sum"] / n if n else 0.0, max=rec["top"][0][1] if rec["top"] else 0.0,
            histogram_edges=edges[first : first + len(counts) + 1], histogram_counts=counts, quantiles=quantiles,
            bands=bands, top_logits=self._pairs(rec["logits"]["top"]), bottom_logits=self._pairs(rec["logits"]["bottom"]),
            logits_per_layer=per_layer, top_inputs=self._pairs(inputs["top"]),
            bottom_inputs=self._pairs(inputs["bottom"]), label=label, label_source=source,
            automatic_label=rec["label"],
        )  # fmt: skip


@lru_cache(maxsize=16)
def _open(path: str, mtime: float, labels_mtime: float) -> Dashboards:
    return Dashboards(path)


def open_dashboards(directory: str | os.PathLike) -> Dashboards:
    """A cached reader (reopened when the file or its labels change)."""
    d = Path(directory).expanduser()
    db = d if d.is_file() else d / DB_FILE
    labels = db.parent / "labels.json"
    mtime = db.stat().st_mtime if db.is_file() else -1.0
    return _open(str(db.parent), mtime, labels.stat().st_mtime if labels.is_file() else -1.0)
