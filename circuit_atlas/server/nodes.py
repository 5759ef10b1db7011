"""The node table of one graph as the API sees it: our ids, every alias a viewer URL may use, tokens
and automatic labels.

Our ids (`feat:l:p:f`, `err:l:p`, `emb:p`, `logit:k`) are primary. Aliases: the circuit-tracer /
Neuronpedia `node_id` the export writes (a colliding error `0_{l}_{p}` is written `err_{l}_{p}`,
so `0_{l}_{p}` means the layer-0 feature, as in the viewers), the newer error form `{l}_-1_{p}`,
and `jsNodeId` where it is unique (Anthropic's saved views use it).
"""

from __future__ import annotations

from collections import Counter

from circuit_atlas.graph.export import SOURCE_KEY, cantor, node_keys, viewer_ids
from circuit_atlas.graph.graph import EMBEDDING, ERROR, FEATURE, KINDS, LOGIT, Graph


class NodeTable:
    def __init__(self, graph: Graph, feature_labels: dict[tuple[int, int], str] | None = None):
        """feature_labels: {(layer, index): label} from the set's feature dashboards, the automatic label
        of feature nodes the graph file does not label itself."""
        self.n = graph.n_nodes
        raw_ids = graph.ids
        seen: Counter[str] = Counter()
        self.ids = []
        for nid in raw_ids:  # opaque imports can repeat an id; keep every node addressable
            self.ids.append(nid if seen[nid] == 0 else f"{nid}#{seen[nid]}")
            seen[nid] += 1
        self.kinds = [KINDS[k] for k in graph.kind.tolist()]
        self.layer = graph.layer.tolist()
        self.position = graph.position.tolist()
        self.feature = graph.feature.tolist()
        self.activation = graph.activation.tolist()
        tokens = list(graph.tokens)
        self.tokens = tokens
        self.token = [tokens[p] if 0 <= p < len(tokens) else "" for p in self.position]
        self.index = {nid: i for i, nid in enumerate(self.ids)}
        self.np_ids, js_ids, _ = viewer_ids(graph)
        aliases: dict[str, int] = {}
        for i, nid in enumerate(self.np_ids):
            aliases.setdefault(nid, i)
        for i, k in enumerate(graph.kind.tolist()):
            if k == ERROR:
                aliases.setdefault(f"{self.layer[i]}_-1_{self.position[i]}", i)
                aliases.setdefault(f"0_{self.layer[i]}_{self.position[i]}", i)
        js_count = Counter(js_ids)
        for i, js in enumerate(js_ids):
            if js and js_count[js] == 1:
                aliases.setdefault(js, i)
        self.aliases = aliases
        originals = (graph.metadata.get(SOURCE_KEY) or {}).get("nodes") or {}
        logit_labels = iter(graph.logit_labels)
        self.auto_labels = []
        for key, k, tok, act in zip(node_keys(graph), graph.kind.tolist(), self.token, self.activation):
            clerp = str((originals.get(key) or {}).get("clerp") or "")
            if not clerp and k == FEATURE and feature_labels:
                clerp = feature_labels.get((self.layer[len(self.auto_labels)], self.feature[len(self.auto_labels)]), "")
            if k == LOGIT:
                label = next(logit_labels)
                clerp = clerp or f'Output "{label}" (p={act:.3f})'
            elif not clerp and k == ERROR:
                clerp = f'Err: mlp "{tok}"'
            elif not clerp and k == EMBEDDING:
                clerp = f'Emb: "{tok}"'
            self.auto_labels.append(clerp)
        # circuit-tracer's clerps key labels by feature number (its node "feature" field, all positions)
        self.feature_numbers: dict[str, list[int]] = {}
        for i, (key, k) in enumerate(zip(node_keys(graph), graph.kind.tolist())):
            if k == FEATURE:
                number = (originals.get(key) or {}).get("feature", cantor(self.layer[i], self.feature[i]))
                self.feature_numbers.setdefault(str(number), []).append(i)
        shares = graph.metadata.get("error_share") or {}  # attribution records |error| / |MLP output|
        self.error_share = [
            shares.get(f"{l}:{p}") if k == ERROR else None
            for k, l, p in zip(graph.kind.tolist(), self.layer, self.position)
        ]
        self.logit_tokens = [None] * self.n
        logit_labels = iter(graph.logit_labels)
        for i, k in enumerate(graph.kind.tolist()):
            if k == LOGIT:
                self.logit_tokens[i] = next(logit_labels)

    def resolve(self, raw: str) -> int:
        """Node index of an id in any dialect; KeyError with one clear sentence otherwise."""
        raw = str(raw).strip()
        if raw in self.index:
            return self.index[raw]
        if raw in self.aliases:
            return self.aliases[raw]
        raise KeyError(
            f"no node {raw!r} in this graph (ids look like feat:LAYER:POS:FEATURE, err:LAYER:POS, emb:POS, logit:K, "
            "or the viewers' LAYER_FEATURE_POS)"
        )

    def is_feature(self, i: int) -> bool:
        return self.kinds[i] == KINDS[FEATURE]

    def feature_key(self, i: int) -> str | None:
        """'L/F' for feature nodes (the key of feature- and graph-scope labels), None otherwise."""
        return f"{self.layer[i]}/{self.feature[i]}" if self.is_feature(i) else None
