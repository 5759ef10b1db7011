// Node connections: the selected node's inputs and outputs, positive then negative, sorted by |weight|,
// optionally grouped by token or layer, in virtualised lists (only the rows on screen exist in the DOM).

import { api, enc } from "./api.js";
import { edgeTint } from "./colors.js";
import { S, emit, glyph, isPinned, layerName, nodeLabel, on, setHover, shortId, tokenAt } from "./state.js";

const ROW = 22;
const K = 500;
let bodyEl;
let groupSel;
let seq = 0;
let current = null; // {node, inputs, outputs}

export function init() {
  bodyEl = document.getElementById("conn-body");
  groupSel = document.getElementById("conn-group");
  groupSel.addEventListener("change", render);
  on("select", load);
  on("labels", render);
  on("pins", render);
  on("hover", markHover);
}

async function load(id) {
  const mine = ++seq;
  if (!id || id.startsWith("sn:")) {
    current = null;
    bodyEl.replaceChildren(hint(id ? "A supernode: its members are listed in the subgraph panel." : "Click a node to see its inputs and outputs."));
    return;
  }
  current = { node: id, inputs: null, outputs: null, error: null };
  render();
  try {
    const base = `/api/graphs/${enc(S.graphId)}/nodes/${enc(id)}/edges?k=${K}&direction=`;
    const [inp, out] = await Promise.all([api.get(base + "in"), api.get(base + "out")]);
    if (mine !== seq) return;
    current.inputs = inp.edges || [];
    current.outputs = out.edges || [];
  } catch (e) {
    if (mine !== seq) return;
    current.error = e.message;
  }
  render();
}

function hint(text) {
  const p = document.createElement("p");
  p.className = "muted hint";
  p.textContent = text;
  return p;
}

function render() {
  if (!current) return;
  const n = S.byId.get(current.node);
  const head = document.createElement("div");
  head.className = "conn-head";
  const g = document.createElement("span");
  g.textContent = `${n ? glyph(n) : "●"} `;
  const lab = document.createElement("b");
  lab.textContent = n ? nodeLabel(n) : current.node;
  const meta = document.createElement("span");
  meta.className = "muted";
  meta.textContent = n ? `  ${layerName(n)} · pos ${n.position} ${JSON.stringify(tokenAt(n.position))}${isPinned(n.id) ? " · pinned" : ""}` : "";
  head.append(g, lab, meta);
  if (current.error) {
    bodyEl.replaceChildren(head, hint(`Could not load the connections: ${current.error}`));
    return;
  }
  const cols = document.createElement("div");
  cols.className = "conn-cols";
  cols.append(column("Input features", current.inputs, n), column("Output features", current.outputs, n));
  bodyEl.replaceChildren(head, cols);
}

function items(edges) {
  const by = groupSel.value;
  const out = [];
  for (const [sign, list] of [
    ["Positive", edges.filter((e) => e.weight > 0)],
    ["Negative", edges.filter((e) => e.weight <= 0)],
  ]) {
    if (!list.length) continue;
    out.push({ header: `${sign} (${list.length})` });
    if (!by) {
      for (const e of list) out.push({ e });
      continue;
    }
    const groups = new Map();
    for (const e of list) {
      const key = by === "token" ? e.position : e.kind === "embedding" ? -1 : e.kind === "logit" ? 1e9 : e.layer;
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(e);
    }
    const keys = [...groups.keys()].sort((a, b) => a - b);
    for (const k of keys) {
      const gl = groups.get(k);
      const sum = gl.reduce((a, e) => a + e.weight, 0);
      const name = by === "token" ? `pos ${k} ${JSON.stringify(tokenAt(k))}` : k === -1 ? "Emb" : k === 1e9 ? "Lgt" : `L${k}`;
      out.push({ header: `  ${name} · ${gl.length} · Σ ${sum.toFixed(3)}`, sub: true });
      for (const e of gl) out.push({ e });
    }
  }
  return out;
}

function column(title, edges, node) {
  const col = document.createElement("div");
  col.className = "conn-col";
  const h = document.createElement("h4");
  const list = document.createElement("div");
  list.className = "vlist";
  col.append(h, list);
  if (edges === null) {
    h.textContent = title;
    list.append(hint("loading…"));
    return col;
  }
  h.textContent = `${title} (${edges.length}${edges.length >= K ? "+" : ""})`;
  if (!edges.length) {
    list.append(hint("none"));
    return col;
  }
  const all = items(edges);
  const spacer = document.createElement("div");
  spacer.style.height = `${all.length * ROW}px`;
  const rows = document.createElement("div");
  rows.className = "rows";
  list.append(spacer, rows);
  const paint = () => {
    const top = list.scrollTop;
    const h0 = list.clientHeight || 400;
    const first = Math.max(0, Math.floor(top / ROW) - 5);
    const last = Math.min(all.length, Math.ceil((top + h0) / ROW) + 5);
    rows.style.top = `${first * ROW}px`;
    const frag = document.createDocumentFragment();
    for (let i = first; i < last; i++) frag.append(row(all[i], node));
    rows.replaceChildren(frag);
  };
  list.addEventListener("scroll", () => requestAnimationFrame(paint));
  requestAnimationFrame(paint);
  paint();
  return col;
}

function row(item, node) {
  const d = document.createElement("div");
  d.className = "crow";
  if (item.header) {
    d.classList.add("ghead");
    d.textContent = item.header;
    return d;
  }
  const e = item.e;
  const shown = S.byId.get(e.id);
  d.dataset.id = e.id;
  if (!shown) {
    d.classList.add("hiddenrow");
    d.title = "hidden by the pruning filter";
  }
  d.style.background = edgeTint(e.pct ?? e.weight);
  const g = document.createElement("span");
  g.textContent = glyph(e);
  const lab = document.createElement("span");
  lab.className = "lab";
  lab.textContent = shown ? nodeLabel(shown) : e.label || shortId(e);
  lab.title = `${lab.textContent} (${e.id})`;
  const arrow = node && e.position !== node.position ? (e.position < node.position ? "← " : "→ ") : "";
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = `${arrow}${e.kind === "embedding" ? "Emb" : e.kind === "logit" ? "Lgt" : `L${e.layer}`}·${e.position}`;
  meta.title = `layer ${e.layer ?? "-"}, position ${e.position} ${JSON.stringify(e.token ?? tokenAt(e.position))}`;
  const w = document.createElement("span");
  w.className = "w";
  w.textContent = (e.weight >= 0 ? "+" : "") + Number(e.weight).toFixed(3);
  if (isPinned(e.id)) lab.style.fontWeight = "600";
  d.append(g, lab, meta, w);
  d.addEventListener("mouseenter", () => setHover(e.id));
  d.addEventListener("mouseleave", () => setHover(null));
  d.addEventListener("click", (ev) => emit("node-click", { id: e.id, ctrl: ev.ctrlKey || ev.metaKey, from: "connections" }));
  return d;
}

function markHover(id) {
  for (const r of bodyEl.querySelectorAll(".crow.hovered")) r.classList.remove("hovered");
  if (!id) return;
  for (const r of bodyEl.querySelectorAll(".crow")) if (r.dataset.id === id) r.classList.add("hovered");
}
