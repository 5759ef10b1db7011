// What the user does to the working state: pin, group, ungroup, rename, move the threshold, (re)load the view.
// Panels call these; each edit goes through state.mutate, so it is undoable and autosaved.

import { api, enc } from "./api.js";
import { S, emit, groupOf, mutate, on, select } from "./state.js";

export function togglePin(id) {
  if (!id || id.startsWith("sn:")) return;
  mutate(() => {
    if (S.pinned.includes(id)) {
      S.pinned = S.pinned.filter((p) => p !== id);
      // Unpinning a member removes it from its group; a group left with one member is dissolved.
      S.supernodes = S.supernodes.map((g) => g.filter((m, i) => i === 0 || m !== id)).filter((g) => g.length > 2);
    } else S.pinned = [...S.pinned, id];
  });
  maybeReloadForKeep(id);
}

export function pin(id) {
  if (id && !S.pinned.includes(id)) togglePin(id);
}

export function clearPins() {
  mutate(() => {
    S.pinned = [];
    S.supernodes = [];
  });
}

/** Make a supernode of these ids (node ids or sn:i cards); merging existing supernodes keeps their label. */
export function group(ids, label = null) {
  const members = [];
  let inherited = null;
  const absorbed = [];
  for (const id of ids) {
    if (id.startsWith("sn:")) {
      const g = S.supernodes[Number(id.slice(3))];
      if (!g) continue;
      inherited = inherited ?? g[0];
      absorbed.push(g);
      members.push(...g.slice(1));
    } else members.push(id);
  }
  const uniq = [...new Set(members)];
  if (uniq.length < 2) return false;
  const first = S.byId.get(uniq[0]);
  const name = label ?? inherited ?? (first?.label && first.label !== first.auto_label ? first.label : "supernode");
  mutate(() => {
    S.supernodes = S.supernodes
      .filter((g) => !absorbed.includes(g))
      .map((g) => g.filter((m, i) => i === 0 || !uniq.includes(m)))
      .filter((g) => g.length > 2);
    S.supernodes.push([name, ...uniq]);
    S.pinned = [...S.pinned, ...uniq.filter((u) => !S.pinned.includes(u))];
  });
  return true;
}

export function ungroup(cardId) {
  let i = -1;
  if (cardId?.startsWith("sn:")) i = Number(cardId.slice(3));
  else if (cardId) i = groupOf(cardId);
  if (i < 0 || !S.supernodes[i]) return false;
  mutate(() => {
    S.supernodes = S.supernodes.filter((_, j) => j !== i);
  });
  if (S.selected === cardId) select(cardId);
  return true;
}

export function renameSupernode(i, label) {
  if (!S.supernodes[i] || !label.trim()) return;
  mutate(() => {
    S.supernodes = S.supernodes.map((g, j) => (j === i ? [label.trim(), ...g.slice(1)] : g));
  });
}

export function setPositions(pos) {
  mutate(() => {
    S.positions = { ...S.positions, ...pos };
  });
}

export function replacePositions(pos) {
  mutate(() => {
    S.positions = pos;
  });
}

let thresholdTimer = null;
export function setThreshold(v) {
  v = Math.max(0.2, Math.min(1, Math.round(v * 100) / 100));
  if (v === S.nodeThreshold) return;
  mutate(
    () => {
      S.nodeThreshold = v;
    },
    { coalesce: "threshold" },
  );
  emit("threshold");
}
/** Show every node the server has: both thresholds to 1. */
export function revealAll() {
  mutate(() => {
    S.nodeThreshold = 1;
    S.edgeThreshold = 1;
  });
  emit("threshold");
}

on("threshold", () => {
  clearTimeout(thresholdTimer);
  thresholdTimer = setTimeout(() => loadView(), 250);
});

function maybeReloadForKeep(id) {
  if (id && !S.index.has(id)) loadView();
}

// ---- view loading ---------------------------------------------------------------------------
let viewSeq = 0;
/**
 * Load the pruned view for the current thresholds and pins. `speculative` is a view fetched at the server's
 * default thresholds while the working state was still loading: used as is when it matches (saves a round
 * trip before the first paint), else a fresh view is fetched.
 */
export async function loadView(speculative = null) {
  if (!S.graphId) return;
  const seq = ++viewSeq;
  if (speculative) {
    const t0 = performance.now();
    const spec = await speculative.catch(() => null);
    const ids = spec ? new Set(spec.nodes.map((n) => n.id)) : null;
    const keepAll = [...S.pinned, ...S.supernodes.flatMap((g) => g.slice(1))];
    if (
      spec &&
      seq === viewSeq &&
      spec.node_threshold === S.nodeThreshold &&
      spec.edge_threshold === S.edgeThreshold &&
      keepAll.every((k) => ids.has(k))
    ) {
      setView(spec);
      window.__atlasTimings = { ...(window.__atlasTimings || {}), viewFetchMs: performance.now() - t0, speculative: true };
      return;
    }
    if (seq !== viewSeq) return;
  }
  const keep = new Set(S.pinned);
  for (const g of S.supernodes) for (const m of g.slice(1)) keep.add(m);
  if (S.selected && !S.selected.startsWith("sn:")) keep.add(S.selected);
  const q = new URLSearchParams({ node_threshold: String(S.nodeThreshold), edge_threshold: String(S.edgeThreshold) });
  if (keep.size) q.set("keep", [...keep].join(","));
  const t0 = performance.now();
  const view = await api.get(`/api/graphs/${enc(S.graphId)}/view?${q}`);
  if (seq !== viewSeq) return; // a newer request superseded this one
  setView(view);
  window.__atlasTimings = { ...(window.__atlasTimings || {}), viewFetchMs: performance.now() - t0 };
}

export function setView(view) {
  const nodes = view.nodes || [];
  S.nodes = nodes;
  S.byId = new Map();
  S.index = new Map();
  nodes.forEach((n, i) => {
    S.byId.set(n.id, n);
    S.index.set(n.id, i);
    const l = S.labels[n.id];
    if (l && l.text != null) {
      n.label = l.text;
      n.label_scope = l.scope;
    }
  });
  const links = view.links || [];
  const n = links.length;
  const src = new Int32Array(n);
  const tgt = new Int32Array(n);
  const weight = new Float32Array(n);
  const pct = new Float32Array(n);
  let m = 0;
  for (const l of links) {
    const a = S.index.get(l.source);
    const b = S.index.get(l.target);
    if (a === undefined || b === undefined) continue;
    src[m] = a;
    tgt[m] = b;
    weight[m] = l.weight;
    pct[m] = l.pct ?? 0;
    m++;
  }
  S.links = { src: src.subarray(0, m), tgt: tgt.subarray(0, m), weight: weight.subarray(0, m), pct: pct.subarray(0, m), n: m };
  S.csr = null;
  S.hidden = view.hidden ?? 0;
  S.nTotal = view.n_total ?? nodes.length;
  if (S.hovered && !S.byId.has(S.hovered)) S.hovered = null;
  emit("view");
  // Adjacency after the first paint: the page shows nodes first, edges a moment later.
  setTimeout(() => {
    S.csr = buildCsr(S.links, nodes.length);
    emit("csr");
  }, 0);
}

function buildCsr(lk, nNodes) {
  const inStart = new Int32Array(nNodes + 1);
  const outStart = new Int32Array(nNodes + 1);
  for (let e = 0; e < lk.n; e++) {
    inStart[lk.tgt[e] + 1]++;
    outStart[lk.src[e] + 1]++;
  }
  for (let i = 0; i < nNodes; i++) {
    inStart[i + 1] += inStart[i];
    outStart[i + 1] += outStart[i];
  }
  const inList = new Int32Array(lk.n);
  const outList = new Int32Array(lk.n);
  const inFill = inStart.slice(0, nNodes);
  const outFill = outStart.slice(0, nNodes);
  for (let e = 0; e < lk.n; e++) {
    inList[inFill[lk.tgt[e]]++] = e;
    outList[outFill[lk.src[e]]++] = e;
  }
  return { inStart, inList, outStart, outList };
}
