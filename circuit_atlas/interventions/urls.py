"""Read supernodes and pinned nodes out of a shared graph-viewer URL.

    view = decode_url("https://www.neuronpedia.org/gemma-2-2b/graph?slug=...&pinnedIds=...&supernodes=...",
                      graph=graph)
    view.feature_supernodes()    # [Supernode("Texas", [Feature(...), ...]), ...]
    view.pinned_features()       # [Feature(...), ...]

The URL may be a Neuronpedia or circuit-tracer link, our viewer's (`.../graph/<slug>?...`), or
just its query string, percent-encoded or not. Parameters read: `pinnedIds` (comma list),
`supernodes` (JSON `[[name, id, ...], ...]`), `clerps` (JSON `[[key, label], ...]`), `clickedId`.

Node ids come in two styles:
    ours          feat:{layer}:{pos}:{index}  err:{layer}:{pos}  emb:{pos}  logit:{k} (the k-th logit target)
    the viewers'  feature {layer}_{index}_{pos}, error 0_{layer}_{pos}, embedding E_{token}_{pos},
                  logit {n_layers+1}_{token}_{pos}; export.py writes a colliding error as err_{layer}_{pos};
                  legacy jsNodeIds {layer}_{index}-0, E_{token}-{pos}, L_{token}-{pos}, and Anthropic's
                  {layer}_{id}_-{k}.

With `graph=`, every id is resolved exactly against the graph: ours against `Graph.ids`, the
viewers' against the node_ids (and jsNodeIds) that graph/export.py writes for that graph (the
original ids for an imported graph). An error `0_{l}_{p}` and layer-0 feature #l at p share one
id; export.py keeps it for the feature (which comes first) and renames the error `err_{l}_{p}`,
so `0_{l}_{p}` resolves to the feature when the graph has both, to the error when only the error
exists. Pass the graph the viewer showed (a pruned export drops nodes, and with them collisions).
Without a graph, `{a}_{b}_{c}` is a feature at layer a unless `n_layers` marks a == n_layers + 1
as a logit, `0_{a}_{b}` is read as a layer-0 feature (errors cannot be told apart; see
`DecodedView.notes`), and ids without a position (legacy `{l}_{f}-0`, Anthropic `{l}_{id}_-{k}`)
are refused.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from ..graph.export import viewer_ids
from ..graph.graph import EMBEDDING, ERROR, FEATURE, KINDS, Graph
from .spec import Feature, Supernode

_OURS = {
    "feature": re.compile(r"feat:(\d+):(\d+):(\d+)"),
    "error": re.compile(r"err:(\d+):(\d+)"),
    "embedding": re.compile(r"emb:(\d+)"),
    "logit": re.compile(r"logit:(\d+)"),
}
_TRIPLE = re.compile(r"(\d+)_(\d+)_(\d+)")
_EMB = re.compile(r"E_(\d+)_(\d+)")
_RENAMED_ERR = re.compile(r"err_(\d+)_(\d+)")
_JS_EMB = re.compile(r"E_(\d+)-(\d+)")
_JS_LOGIT = re.compile(r"L_(\d+)-(\d+)")
MAX_LISTED = 20  # problem ids listed in one error message
_JS_NO_POSITION = re.compile(r"(\d+)_(\d+)-(\d+)|(\d+)_([^_]+)_-(\d+)")


@dataclass(frozen=True)
class NodeRef:
    """One node named in a URL.

    kind: "feature", "error", "embedding" or "logit". layer: None for embeddings; logits sit at
    n_layers (as in Graph), None when unknown. index: the feature index for features, the token
    id for embeddings and logits, None for errors or when unknown. id: the id as the URL wrote it.
    node: our typed id (Graph.ids) when resolved against a graph. logit_index: k for the k-th
    logit target, when known.
    """

    kind: str
    layer: int | None
    position: int | None
    index: int | None
    id: str
    node: str | None = None
    logit_index: int | None = None

    def as_feature(self) -> Feature:
        if self.kind != "feature":
            article = "an" if self.kind[0] in "aeiou" else "a"
            raise ValueError(f"node {self.id!r} is {article} {self.kind} node, not a feature")
        return Feature(self.layer, self.position, self.index)


@dataclass
class DecodedView:
    """What a viewer URL pins and groups. `notes` says how ambiguous ids were read."""

    supernodes: dict[str, list[NodeRef]] = field(default_factory=dict)
    pinned: list[NodeRef] = field(default_factory=list)
    clerps: dict[str, str] = field(default_factory=dict)
    clicked: NodeRef | None = None
    slug: str | None = None
    notes: list[str] = field(default_factory=list)

    def feature_supernodes(self) -> list[Supernode]:
        """One Supernode per URL supernode, holding its feature members. A group with no feature
        members at all (e.g. token embeddings) becomes Supernode(name, None), as spec.py marks
        non-feature nodes; the non-feature members of mixed groups are listed in `skipped`."""
        out = []
        for name, refs in self.supernodes.items():
            feats = [r.as_feature() for r in refs if r.kind == "feature"]
            out.append(Supernode(name, feats if feats or not refs else None))
        return out

    @property
    def skipped(self) -> list[tuple[str, NodeRef]]:
        """(supernode name, member) for every member that is not a feature (left out of feature_supernodes)."""
        return [(name, r) for name, refs in self.supernodes.items() for r in refs if r.kind != "feature"]

    def pinned_features(self) -> list[Feature]:
        """The pinned feature nodes as Features, each once, in URL order."""
        return list(dict.fromkeys(r.as_feature() for r in self.pinned if r.kind == "feature"))


class _Resolver:
    """Turns id strings into NodeRefs, against a graph when there is one; collects every problem."""

    def __init__(self, graph: Graph | None, n_layers: int | None):
        self.graph, self.n_layers, self.problems, self.notes = graph, n_layers, [], []
        self.cache: dict[str, NodeRef | None] = {}
        self.bare_zero: list[str] = []
        if graph is not None:
            self.ids = graph.ids  # computed once: Graph.ids builds the whole list on every call
            self.typed = {nid: i for i, nid in enumerate(self.ids)}
            node_ids, js_ids, self.renamed = viewer_ids(graph)
            self.viewer = {nid: i for i, nid in enumerate(node_ids)}
            self.js: dict[str, list[int]] = {}
            for i, js in enumerate(js_ids):
                self.js.setdefault(js, []).append(i)

    def __call__(self, raw: str, where: str) -> NodeRef | None:
        if raw not in self.cache:
            try:
                self.cache[raw] = self._graph_ref(raw) if self.graph is not None else self._parse(raw)
            except ValueError as exc:
                self.problems.append(f"{raw!r} ({where}): {exc}")
                self.cache[raw] = None
        return self.cache[raw]

    # without a graph: the id's own syntax
    def _parse(self, raw: str) -> NodeRef:
        for kind, pattern in _OURS.items():
            m = pattern.fullmatch(raw)
            if m:
                a = [int(x) for x in m.groups()]
                if kind == "feature":
                    return NodeRef("feature", a[0], a[1], a[2], raw)
                if kind == "error":
                    return NodeRef("error", a[0], a[1], None, raw)
                if kind == "embedding":
                    return NodeRef("embedding", None, a[0], None, raw)
                return NodeRef("logit", self.n_layers, None, None, raw, logit_index=a[0])
        if m := _EMB.fullmatch(raw) or _JS_EMB.fullmatch(raw):
            return NodeRef("embedding", None, int(m[2]), int(m[1]), raw)
        if m := _RENAMED_ERR.fullmatch(raw):
            return NodeRef("error", int(m[1]), int(m[2]), None, raw)
        if m := _JS_LOGIT.fullmatch(raw):
            return NodeRef("logit", self.n_layers, int(m[2]), int(m[1]), raw)
        if m := _TRIPLE.fullmatch(raw):
            layer, index, pos = int(m[1]), int(m[2]), int(m[3])
            if self.n_layers is not None and layer == self.n_layers + 1:
                return NodeRef("logit", self.n_layers, pos, index, raw)
            if self.n_layers is not None and layer >= self.n_layers:
                raise ValueError(
                    f"layer {layer} is not in a {self.n_layers}-layer model (features are 0..{self.n_layers - 1}, "
                    f"logits {self.n_layers + 1})"
                )
            if layer == 0:
                self.bare_zero.append(raw)
            return NodeRef("feature", layer, pos, index, raw)
        if _JS_NO_POSITION.fullmatch(raw):
            raise ValueError("a jsNodeId without a token position; it can only be resolved with graph=")
        raise ValueError(
            "not a node id; expected feat:L:P:F, err:L:P, emb:P, logit:K, {layer}_{index}_{pos}, "
            "0_{layer}_{pos}, E_{token}_{pos} or {n_layers+1}_{token}_{pos}"
        )

    # with a graph: exact look-up
    def _graph_ref(self, raw: str) -> NodeRef:
        if ":" in raw:
            self._parse(raw)  # a malformed typed id gets the syntax message
            i = self.typed.get(raw)
        elif raw in self.viewer:
            i = self.viewer[raw]
            if raw in self.renamed:
                kind = KINDS[int(self.graph.kind[i])]
                self.notes.append(f"{raw!r} names both a layer-0 feature and an MLP error; read as the {kind}, "
                                  f"as export.py does (the error is {self.renamed[raw]!r})")  # fmt: skip
        elif len(self.js.get(raw, [])) == 1:
            i = self.js[raw][0]
        elif raw in self.js:
            names = ", ".join(self.ids[j] for j in self.js[raw])
            raise ValueError(f"a jsNodeId shared by {len(self.js[raw])} nodes ({names}); use the node_id instead")
        else:
            i = None
        if i is None:
            try:
                self._parse(raw)
            except ValueError as exc:
                if "jsNodeId" not in str(exc):
                    raise
            raise ValueError("no such node in the graph")
        return self._ref(i, raw)

    def _ref(self, i: int, raw: str) -> NodeRef:
        g = self.graph
        k, l, p, f = (int(g.kind[i]), int(g.layer[i]), int(g.position[i]), int(g.feature[i]))
        typed = self.ids[i]
        if k == FEATURE:
            return NodeRef("feature", l, p, f, raw, typed)
        if k == ERROR:
            return NodeRef("error", l, p, None, raw, typed)
        if k == EMBEDDING:
            return NodeRef("embedding", None, p, f if f >= 0 else None, raw, typed)
        return NodeRef("logit", g.n_layers, p, f, raw, typed, logit_index=int(typed.split(":")[1]))


# --- the URL ------------------------------------------------------------------------------


def _params(url: str) -> tuple[dict[str, str], str | None]:
    """Query parameters (first value of each) and the slug from a `/graph/<slug>` path, if any."""
    text = url.strip()
    path_slug = None
    if "://" in text or text.startswith("/"):
        parts = urlsplit(text)
        query = parts.query
        m = re.search(r"/graph/([^?#]+)$", parts.path)
        if m:
            path_slug = unquote(m[1]).strip("/") or None
    else:
        query = text.removeprefix("?")
    params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
    return params, path_slug


def _json_list(text: str, name: str, example: str) -> list:
    text = text.strip()
    if not text:
        return []
    if not text.startswith("[") and unquote(text).lstrip().startswith("["):
        text = unquote(text)  # encoded twice (pasted from an already encoded link)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the {name} parameter is not valid JSON ({exc.msg} at character {exc.pos}); "
                         f"expected e.g. {example}") from None  # fmt: skip
    if not isinstance(value, list):
        raise ValueError(f"the {name} parameter must be a JSON list, e.g. {example}; got {type(value).__name__}")
    return value


def _pinned_ids(text: str) -> list[str]:
    text = text.strip()
    if text.startswith("[") or unquote(text).startswith("["):  # a JSON list, as some saved views hold it
        value = _json_list(text, "pinnedIds", '["20_15589_6", "E_651_3"]')
        if not all(isinstance(x, str) for x in value):
            raise ValueError(f"the pinnedIds parameter must list id strings, got {value!r}")
        return [x.strip() for x in value if x.strip()]
    return [x.strip() for x in text.split(",") if x.strip()]


def _unique_name(name: str, taken: dict) -> str:
    if name not in taken:
        return name
    n = 2
    while f"{name} ({n})" in taken:
        n += 1
    return f"{name} ({n})"


def decode_url(url: str, graph: Graph | None = None, n_layers: int | None = None) -> DecodedView:
    """Supernodes, pinned nodes, labels and the clicked node of a viewer URL (see the module docstring).

    graph: resolve every id against this graph (recommended). n_layers: the model's depth, to
    recognise logit ids `{n_layers+1}_{token}_{pos}` without a graph. Raises one ValueError that
    lists every malformed or unknown id.
    """
    if not isinstance(url, str):
        raise ValueError(f"decode_url needs the URL as a string, got {type(url).__name__}")
    if graph is not None and not isinstance(graph, Graph):
        raise ValueError(f"graph must be a circuit_atlas Graph, got {type(graph).__name__}")
    if n_layers is not None:
        if not isinstance(n_layers, int) or isinstance(n_layers, bool) or n_layers < 1:
            raise ValueError(f"n_layers must be a positive integer, got {n_layers!r}")
        if graph is not None and n_layers != graph.n_layers:
            raise ValueError(f"n_layers={n_layers} but the graph has {graph.n_layers} layers; leave n_layers out")
    params, path_slug = _params(url)
    resolve = _Resolver(graph, graph.n_layers if graph is not None else n_layers)
    view = DecodedView(slug=params.get("slug") or path_slug)

    example = '[["Texas", "20_15589_6", "21_5943_6"], ...]'
    for i, entry in enumerate(_json_list(params.get("supernodes", ""), "supernodes", example)):
        if not (isinstance(entry, list) and entry and all(isinstance(x, str) for x in entry)):
            raise ValueError(f"supernodes entry {i} is {json.dumps(entry)}, not [name, node_id, ...] strings; "
                             f"expected e.g. {example}")  # fmt: skip
        name = _unique_name(entry[0], view.supernodes)
        refs = [resolve(raw.strip(), f"supernode {name!r}") for raw in entry[1:] if raw.strip()]
        view.supernodes[name] = [r for r in refs if r is not None]
    pinned = [resolve(raw, "pinnedIds") for raw in _pinned_ids(params.get("pinnedIds", ""))]
    view.pinned = [r for r in pinned if r is not None]
    clicked = params.get("clickedId", "").strip()
    view.clicked = resolve(clicked, "clickedId") if clicked else None
    for i, pair in enumerate(_json_list(params.get("clerps", ""), "clerps", '[["20_15589_6", "Texas"], ...]')):
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], str)):
            raise ValueError(f"clerps entry {i} is {json.dumps(pair)}, not a [key, label] pair")
        view.clerps[str(pair[0])] = pair[1]

    if resolve.problems:
        where = "in the graph" if graph is not None else "in the URL"
        shown = resolve.problems[:MAX_LISTED]
        more = len(resolve.problems) - len(shown)
        raise ValueError(f"{len(resolve.problems)} node id(s) could not be read {where}:\n  " + "\n  ".join(shown)
                         + (f"\n  ... and {more} more" if more else ""))  # fmt: skip
    view.notes = list(dict.fromkeys(resolve.notes))
    if resolve.bare_zero:
        view.notes.append(f"{len(set(resolve.bare_zero))} id(s) of the form 0_a_b were read as layer-0 features; "
                          "the viewers write MLP errors as 0_{layer}_{pos} too: pass graph= to tell them apart")  # fmt: skip
    if graph is None and n_layers is None and any(r.kind == "feature" for r in _all_refs(view)):
        view.notes.append("without graph= or n_layers=, logit ids {n_layers+1}_{token}_{pos} read as features")
    return view


def _all_refs(view: DecodedView) -> list[NodeRef]:
    refs = [r for rs in view.supernodes.values() for r in rs] + list(view.pinned)
    return refs + ([view.clicked] if view.clicked else [])
