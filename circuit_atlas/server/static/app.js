// Entry point: routing (/ = library, /graphs/{id}, /v/{code}, Neuronpedia-style long URLs), opening a graph,
// and the top bar. Panels are separate modules that listen to the store in state.js.

import { clearPins, group, loadView, revealAll, setThreshold, togglePin } from "./actions.js";
import { api, enc } from "./api.js";
import * as connections from "./connections.js";
import * as detail from "./detail.js";
import * as exporter from "./export.js";
import * as keys from "./keys.js";
import * as library from "./library.js";
import * as linkgraph from "./linkgraph.js";
import * as search from "./search.js";
import {
  S,
  applyServerState,
  canRedo,
  canUndo,
  emit,
  flushSave,
  mutate,
  on,
  redo,
  select,
  undo,
} from "./state.js";
import * as steer from "./steer.js";
import * as subgraph from "./subgraph.js";

const $ = (id) => document.getElementById(id);

function banner(text, isError = false) {
  const b = $("banner");
  b.textContent = text || "";
  b.hidden = !text;
  b.classList.toggle("error", isError);
}

export async function route() {
  const path = location.pathname;
  const params = new URLSearchParams(location.search);
  let m;
  try {
    if ((m = path.match(/^\/graphs\/([^/]+)\/?$/))) await openGraph(decodeURIComponent(m[1]), { params });
    else if ((m = path.match(/^\/v\/([^/]+)\/?$/))) await openView(decodeURIComponent(m[1]));
    else if (params.get("slug")) await openSlug(params.get("slug"), params);
    else showLibrary();
  } catch (e) {
    banner(e.message, true);
    console.error(e);
  }
}

function showLibrary() {
  $("viewer").hidden = true;
  $("graph-controls").hidden = true;
  $("graph-title").textContent = "";
  $("library").hidden = false;
  document.title = "circuit-atlas · graphs";
  S.graphId = null;
  library.show();
}

async function openSlug(slug, params) {
  let list = [];
  try {
    list = await api.get(`/api/graphs?slug=${enc(slug)}`);
  } catch {
    list = [];
  }
  let hit = list.find((g) => g.id === slug || g.slug === slug || g.name === slug);
  if (!hit) {
    const all = await api.get(`/api/graphs?q=${enc(slug)}`);
    hit = all.find((g) => g.id === slug || g.slug === slug || g.name === slug);
  }
  if (!hit) throw new Error(`No graph named ${JSON.stringify(slug)} is in this library: upload it first, then open the link again.`);
  history.replaceState(null, "", `/graphs/${enc(hit.id)}?${params}`);
  await openGraph(hit.id, { params });
}

async function openView(code) {
  const v = await api.get(`/api/views/${enc(code)}`);
  await openGraph(v.graph, { view: v, code });
}

export async function openGraph(id, { params = null, view = null, code = null } = {}) {
  await flushSave();
  banner("");
  $("library").hidden = true;
  $("viewer").hidden = false;
  $("graph-controls").hidden = false;
  S.graphId = id;
  S.selected = null;
  S.hovered = null;
  S.grouping.clear();
  S.readOnly = !!view;
  S.viewCode = code;
  // Everything the first paint needs, in parallel: metadata, working state, labels, past runs.
  // The view at the server's defaults starts at once too; loadView uses it if the state asks for nothing else.
  const speculative = view || params?.get("pinnedIds") ? null : api.get(`/api/graphs/${enc(id)}/view`);
  const [meta, st, labels, runs] = await Promise.all([
    api.get(`/api/graphs/${enc(id)}`),
    api.get(`/api/graphs/${enc(id)}/state`).catch(() => ({})),
    api.get(`/api/graphs/${enc(id)}/labels`).catch(() => ({})),
    api.get(`/api/graphs/${enc(id)}/runs`).catch(() => []),
  ]);
  S.meta = meta;
  S.nodeThreshold = meta.node_threshold ?? 0.8;
  S.edgeThreshold = meta.edge_threshold ?? 0.98;
  $("graph-title").textContent = `${meta.name || meta.id} — ${meta.prompt ?? ""}`;
  document.title = `circuit-atlas · ${meta.name || meta.id}`;
  S.labels = labels || {};
  applyServerState(st || {});
  S.steerRuns = (runs || [])
    .map((r) => ({ at: isoTime(r.finished ?? r.created), request: r.request, result: r.result, summary: steer.runSummary(r.request, r.result) }))
    .reverse();
  if (view) {
    applyServerState({ ...view, version: S.version });
    for (const [nid, text] of Object.entries(view.labels || {})) {
      const t = typeof text === "string" ? text : text?.text;
      if (t != null) S.labels[nid] = { ...(S.labels[nid] || {}), text: t, scope: text?.scope || "graph" };
    }
    banner(`Shared view ${code} (read-only: edits here are not saved). Open the graph itself to edit.`);
    const a = document.createElement("a");
    a.href = `/graphs/${enc(id)}`;
    a.textContent = " Open the graph";
    $("banner").append(a);
  }
  if (!view && meta.view_code) {
    banner("This file carried a saved view (its pins, groups and labels).");
    const a = document.createElement("a");
    a.href = `/v/${enc(meta.view_code)}`;
    a.textContent = " Open it";
    $("banner").append(a);
  }
  if (params && (params.get("pinnedIds") || params.get("supernodes") || params.get("clerps"))) await applyLongUrl(params);
  syncPrune();
  await loadView(speculative);
  emit("pins");
  emit("history");
  if (params?.get("clickedId") && S.byId.has(params.get("clickedId"))) select(params.get("clickedId"));
}

function isoTime(t) {
  const d = typeof t === "number" ? new Date(t * 1000) : new Date(t);
  return Number.isNaN(d.getTime()) ? "" : d.toISOString();
}

/** Neuronpedia / circuit-tracer URL state: pinnedIds, supernodes, clerps, pruningThreshold. */
async function applyLongUrl(params) {
  const pinned = (params.get("pinnedIds") || "").split(",").filter(Boolean);
  let supernodes = [];
  let clerps = [];
  try {
    supernodes = JSON.parse(params.get("supernodes") || "[]");
    clerps = JSON.parse(params.get("clerps") || "[]");
  } catch (e) {
    banner(`The link's supernodes / clerps are not valid JSON (${e.message}); only the pins were restored.`, true);
  }
  const ids = [...new Set([...pinned, ...supernodes.flatMap((g) => g.slice(1)), ...clerps.map((c) => c[0])])];
  let map = {};
  try {
    map = (await api.post(`/api/graphs/${enc(S.graphId)}/resolve`, { ids })).ids || {};
  } catch {
    for (const i of ids) map[i] = i; // server without /resolve: ids may already be ours
  }
  const r = (i) => map[i] ?? null;
  const missing = ids.filter((i) => !r(i));
  mutate(() => {
    S.pinned = [...new Set([...S.pinned, ...pinned.map(r).filter(Boolean)])];
    for (const g of supernodes) {
      const members = g.slice(1).map(r).filter(Boolean);
      if (members.length >= 2) S.supernodes.push([String(g[0]), ...members]);
      for (const m of members) if (!S.pinned.includes(m)) S.pinned.push(m);
    }
    const pt = Number(params.get("pruningThreshold"));
    if (pt > 0 && pt <= 1) S.nodeThreshold = pt;
  });
  for (const [key, text] of clerps) {
    const nid = r(key);
    if (nid && typeof text === "string") {
      try {
        await api.put(`/api/graphs/${enc(S.graphId)}/labels/${enc(nid)}`, { text, scope: "node" });
        S.labels[nid] = { ...(S.labels[nid] || {}), text, scope: "node" };
      } catch (e) {
        banner(`A label from the link was not saved: ${e.message}`, true);
      }
    }
  }
  if (missing.length) banner(`${missing.length} node id(s) in the link are not in this graph: ${missing.slice(0, 5).join(", ")}`, true);
  history.replaceState(null, "", `/graphs/${enc(S.graphId)}`);
}

function syncPrune() {
  $("prune").value = String(S.nodeThreshold);
  $("prune-value").textContent = S.nodeThreshold.toFixed(2);
}

function wireTopbar() {
  $("prune").addEventListener("input", (e) => {
    $("prune-value").textContent = Number(e.target.value).toFixed(2);
    setThreshold(Number(e.target.value));
  });
  $("reveal").addEventListener("click", revealAll);
  on("threshold", syncPrune);
  on("view", () => {
    const hc = $("hidden-count");
    hc.textContent = `${S.nodes.length} shown · ${S.hidden} node${S.hidden === 1 ? "" : "s"} hidden by filters`;
    $("reveal").hidden = S.hidden === 0;
  });
  $("undo").addEventListener("click", undo);
  $("redo").addEventListener("click", redo);
  on("history", () => {
    $("undo").disabled = !canUndo();
    $("redo").disabled = !canRedo();
  });
  on("status", ({ text, error }) => {
    const s = $("save-status");
    s.textContent = S.readOnly ? "read-only view" : text;
    s.classList.toggle("error", !!error);
  });
  $("share").addEventListener("click", share);
  $("help-open").addEventListener("click", keys.showHelp);
  $("search-open").addEventListener("click", search.open);
  for (const o of document.querySelectorAll(".overlay"))
    o.addEventListener("click", (e) => {
      if (e.target === o || e.target.hasAttribute("data-close")) o.hidden = true;
    });
  for (const b of document.querySelectorAll(".panel .fs"))
    b.addEventListener("click", () => {
      const p = b.closest(".panel");
      p.classList.toggle("fullscreen");
      b.textContent = p.classList.contains("fullscreen") ? "✕ Close" : "Full";
      window.dispatchEvent(new Event("resize"));
    });
  $("home").addEventListener("click", (e) => {
    e.preventDefault();
    navigate("/");
  });
}

export function navigate(url) {
  history.pushState(null, "", url);
  route();
}

async function share() {
  try {
    const labels = {};
    for (const [nid, l] of Object.entries(S.labels)) if (l && l.text != null) labels[nid] = l.text;
    const res = await api.post(`/api/graphs/${enc(S.graphId)}/views`, {
      pinned: S.pinned,
      supernodes: S.supernodes,
      labels,
      node_threshold: S.nodeThreshold,
      edge_threshold: S.edgeThreshold,
      positions: S.positions,
      notes: S.notes,
    });
    const url = new URL(res.url, location.origin).href;
    $("share-url").value = url;
    $("share-dialog").hidden = false;
    $("share-url").select();
    try {
      await navigator.clipboard.writeText(url);
    } catch {
      document.execCommand?.("copy");
    }
  } catch (e) {
    banner(`Share failed: ${e.message}`, true);
  }
}

on("node-click", ({ id, ctrl }) => {
  if (!id) return;
  if (keys.groupHeld() || subgraph.groupingMode()) {
    if (S.grouping.has(id)) S.grouping.delete(id);
    else S.grouping.add(id);
    emit("grouping");
  } else if (ctrl) togglePin(id);
  else select(id);
});

window.addEventListener("popstate", route);
window.addEventListener("beforeunload", () => flushSave());

// Hooks for the browser tests and the bench: read-only access to state and geometry.
window.atlas = { S, screenPos: linkgraph.screenPos, cardPos: subgraph.cardPos, group, clearPins, flushSave };

function boot() {
  wireTopbar();
  linkgraph.init();
  connections.init();
  detail.init();
  subgraph.init();
  steer.init();
  search.init();
  keys.init();
  exporter.init();
  library.init({ openGraph: (id) => navigate(`/graphs/${enc(id)}`) });
  route();
}
boot();
