// Subgraph: pinned nodes and supernodes as cards with the server's re-normalised edges; force or layered
// layout, drag to place (positions autosaved, 0..1000 scale), zoom, replacement / completeness beside the
// whole graph's, and the last steering run's activation change drawn on each card.

import { group, renameSupernode, replacePositions, setPositions, togglePin, ungroup } from "./actions.js";
import { api, enc } from "./api.js";
import { edgeColor, signMark } from "./colors.js";
import { S, emit, layerName, on, select, setHover, shortId, supernodeId, tokenAt } from "./state.js";

const NS = "http://www.w3.org/2000/svg";
const CW = 124;
const CH = 38;
let svg, bodyEl, scoresEl, hintEl;
let data = { cards: [], edges: [], scores: null };
let seq = 0;
let zoom = 1;
let grouping = false;
let layoutCache = {}; // card id -> [x, y] from the last automatic layout
let steerOverlay = null;

export function groupingMode() {
  return grouping;
}

export function init() {
  svg = document.getElementById("sg-svg");
  bodyEl = document.getElementById("sg-body");
  scoresEl = document.getElementById("sg-scores");
  hintEl = document.getElementById("sg-hint");
  on("pins", refresh);
  on("view", () => data.cards.length || refresh());
  on("labels", draw);
  on("select", draw);
  const syncPin = () => {
    const b = document.getElementById("sg-pin");
    b.textContent = S.selected && S.pinned.includes(S.selected) ? "Unpin" : "Pin";
    b.disabled = !S.selected || S.selected.startsWith("sn:");
  };
  on("select", syncPin);
  on("pins", syncPin);
  on("hover", markHover);
  on("grouping", draw);
  on("steer-result", (r) => {
    steerOverlay = r;
    draw();
  });
  new ResizeObserver(() => draw()).observe(bodyEl);
  const $ = (id) => document.getElementById(id);
  $("sg-pin").addEventListener("click", () => S.selected && togglePin(S.selected));
  $("sg-group").addEventListener("click", groupButton);
  $("sg-ungroup").addEventListener("click", () => ungroup(S.selected));
  $("sg-layout").addEventListener("change", () => relayout());
  $("sg-relayout").addEventListener("click", () => relayout());
  $("sg-zoom-in").addEventListener("click", () => setZoom(zoom * 1.25));
  $("sg-zoom-out").addEventListener("click", () => setZoom(zoom / 1.25));
  $("sg-clear").addEventListener("click", () => window.atlas.clearPins());
  svg.addEventListener("wheel", (e) => {
    e.preventDefault();
    setZoom(zoom * Math.exp(-e.deltaY * 0.0015));
  });
  svg.addEventListener("mousedown", (e) => {
    if (e.target === svg && S.selected) select(S.selected);
  });
}

function groupButton() {
  const b = document.getElementById("sg-group");
  if (!grouping) {
    // With two or more cards already picked (g held earlier), group at once; else enter grouping mode.
    if (S.grouping.size >= 2) return finishGrouping();
    grouping = true;
    b.textContent = "Save group (0)";
    b.classList.add("primary");
    emit("grouping");
    return;
  }
  finishGrouping();
}

export function finishGrouping() {
  const ids = [...S.grouping];
  S.grouping.clear();
  grouping = false;
  const b = document.getElementById("sg-group");
  b.textContent = "Group";
  b.classList.remove("primary");
  if (ids.length >= 2) group(ids);
  emit("grouping");
}
on("grouping", () => {
  if (grouping) document.getElementById("sg-group").textContent = `Save group (${S.grouping.size})`;
});

function setZoom(z) {
  zoom = Math.max(0.3, Math.min(4, z));
  draw();
}

async function refresh() {
  const mine = ++seq;
  if (!S.graphId) return;
  if (!S.pinned.length) {
    data = { cards: [], edges: [], scores: null };
    draw();
    scoresFromGraph();
    return;
  }
  try {
    const res = await api.post(`/api/graphs/${enc(S.graphId)}/subgraph`, { pinned: S.pinned, supernodes: S.supernodes });
    if (mine !== seq) return;
    data = normalise(res);
    data.error = null;
  } catch (e) {
    if (mine !== seq) return;
    data = localSubgraph();
    data.error = `The server could not build the subgraph (${e.message}); showing pinned nodes with unmerged edges.`;
  }
  layoutCache = {};
  draw();
  svg.dataset.pinned = String(S.pinned.length); // the cards now reflect every pin (tests wait on this)
}

/** Give each server card our id: node id, or sn:i for the supernode with the same members. */
function normalise(res) {
  const cards = (res.cards || []).map((c) => {
    const members = c.members || [c.id];
    let id = c.id;
    const i = S.supernodes.findIndex((g) => g.length - 1 === members.length && members.every((m) => g.includes(m)));
    if (i >= 0 && (members.length > 1 || !S.byId.has(c.id) || c.id.startsWith("sn"))) id = supernodeId(i);
    return { ...c, server_id: c.id, id, members, sn: id.startsWith("sn:") ? Number(id.slice(3)) : -1 };
  });
  const map = new Map(cards.map((c) => [c.server_id, c.id]));
  const edges = (res.edges || []).map((e) => ({ ...e, source: map.get(e.source) ?? e.source, target: map.get(e.target) ?? e.target }));
  return { cards, edges, scores: res.scores || null };
}

function localSubgraph() {
  const cards = [];
  const owner = new Map();
  S.supernodes.forEach((g, i) => {
    const id = supernodeId(i);
    const ms = g.slice(1);
    const ns = ms.map((m) => S.byId.get(m)).filter(Boolean);
    cards.push({ id, label: g[0], members: ms, sn: i, layer: avg(ns.map((n) => n.layer)), position: avg(ns.map((n) => n.position)) });
    for (const m of ms) owner.set(m, id);
  });
  for (const p of S.pinned)
    if (!owner.has(p)) {
      const n = S.byId.get(p);
      cards.push({ id: p, label: n ? n.label || shortId(n) : p, members: [p], sn: -1, layer: n?.layer ?? 0, position: n?.position ?? 0 });
      owner.set(p, p);
    }
  const acc = new Map();
  if (S.links) {
    for (let e = 0; e < S.links.n; e++) {
      const a = owner.get(S.nodes[S.links.src[e]].id);
      const b = owner.get(S.nodes[S.links.tgt[e]].id);
      if (!a || !b || a === b) continue;
      const k = `${a}\u0000${b}`;
      acc.set(k, (acc.get(k) || 0) + S.links.pct[e]);
    }
  }
  const edges = [...acc].map(([k, w]) => {
    const [source, target] = k.split("\u0000");
    return { source, target, weight: w };
  });
  return { cards, edges, scores: null };
}
function avg(xs) {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
}

function scoresFromGraph(sc = null) {
  const g = sc?.graph || S.meta?.scores;
  const sub = sc?.subgraph;
  const f = (x) => (typeof x === "number" ? x.toFixed(3) : "–");
  scoresEl.textContent =
    `Replacement: graph ${f(g?.replacement)}${sub ? ` · subgraph ${f(sub.replacement)}` : ""}   ` +
    `Completeness: graph ${f(g?.completeness)}${sub ? ` · subgraph ${f(sub.completeness)}` : ""}` +
    (data.error ? `   — ${data.error}` : "");
}

// ---- layout ---------------------------------------------------------------------------------
function band(c) {
  const nL = S.meta?.n_layers ?? 1;
  const ns = c.members.map((m) => S.byId.get(m)).filter(Boolean);
  if (!ns.length) return (c.layer ?? 0) + 1;
  return avg(
    ns.map((n) => (n.kind === "embedding" ? 0 : n.kind === "logit" ? nL + 1 : n.layer + 1)),
  );
}
// Targets spread over the panel by rank: tokens in use left to right, layers in use bottom to top (the
// absolute token index would crowd a subgraph whose nodes all sit at the last few positions).
let ranks = { pos: new Map(), band: new Map() };
function computeRanks(cards) {
  const rank = (vals) => {
    const u = [...new Set(vals)].sort((a, b) => a - b);
    return new Map(u.map((v, i) => [v, u.length === 1 ? 0.5 : i / (u.length - 1)]));
  };
  ranks = { pos: rank(cards.map((c) => Math.round(c.position * 2) / 2)), band: rank(cards.map((c) => Math.round(band(c) * 2) / 2)) };
}
function targetXY(c) {
  const px = ranks.pos.get(Math.round(c.position * 2) / 2) ?? 0.5;
  const by = ranks.band.get(Math.round(band(c) * 2) / 2) ?? 0.5;
  return [80 + px * 840, 930 - by * 860];
}

function autoLayout(cards, edges) {
  computeRanks(cards);
  const mode = document.getElementById("sg-layout").value;
  const pos = {};
  if (mode === "layered") {
    const rows = new Map();
    for (const c of cards) {
      const b = Math.round(band(c) * 2) / 2;
      if (!rows.has(b)) rows.set(b, []);
      rows.get(b).push(c);
    }
    for (const [, list] of rows) {
      list.sort((a, b) => a.position - b.position);
      list.forEach((c, i) => {
        const [, ty] = targetXY(c);
        const tx = list.length === 1 ? targetXY(c)[0] : 80 + (i / (list.length - 1)) * 840;
        pos[c.id] = [tx, ty];
      });
    }
    return pos;
  }
  // Force: springs along edges pull linked cards together in x, a strong pull keeps each card at its layer's
  // height, a weak one near its token's x, and collisions push overlapping cards apart (card size in layout units).
  const cw = ((CW + 12) / Math.max(100, geom.w - 2 * geom.pad)) * 1000;
  const ch = ((CH + 8) / Math.max(60, geom.h - 48)) * 1000;
  const P = cards.map((c) => targetXY(c).slice());
  const T = cards.map((c) => targetXY(c));
  const idx = new Map(cards.map((c, i) => [c.id, i]));
  const E = edges
    .map((e) => [idx.get(e.source), idx.get(e.target), Math.abs(e.weight)])
    .filter(([a, b]) => a !== undefined && b !== undefined);
  P.forEach((p, i) => (p[0] += (i % 5) - 2)); // break ties between cards with the same target
  for (let it = 0; it < 300; it++) {
    const alpha = 1 - it / 300;
    for (const [a, b, w] of E) {
      const dx = (P[b][0] - P[a][0]) * 0.02 * Math.min(1, w * 5) * alpha;
      P[a][0] += dx;
      P[b][0] -= dx;
    }
    for (let i = 0; i < P.length; i++) {
      P[i][0] += (T[i][0] - P[i][0]) * 0.03 * alpha;
      P[i][1] += (T[i][1] - P[i][1]) * 0.3 * alpha;
    }
    for (let i = 0; i < P.length; i++)
      for (let j = i + 1; j < P.length; j++) {
        const dx = P[i][0] - P[j][0];
        const dy = P[i][1] - P[j][1];
        const ox = cw - Math.abs(dx);
        const oy = ch - Math.abs(dy);
        if (ox <= 0 || oy <= 0) continue;
        // Resolve along the axis needing the smaller move (y moves cost more: layers should stay put).
        if (ox < oy * 2.5) {
          const s = (dx >= 0 ? 1 : -1) * ox * 0.5;
          P[i][0] += s;
          P[j][0] -= s;
        } else {
          const s = (dy >= 0 ? 1 : -1) * oy * 0.5;
          P[i][1] += s;
          P[j][1] -= s;
        }
      }
    for (const p of P) {
      p[0] = Math.max(0, Math.min(1000, p[0]));
      p[1] = Math.max(0, Math.min(1000, p[1]));
    }
  }
  cards.forEach((c, i) => (pos[c.id] = P[i]));
  return pos;
}

function relayout() {
  const drop = {};
  for (const c of data.cards) if (S.positions[c.id]) drop[c.id] = true;
  layoutCache = {};
  if (Object.keys(drop).length) replacePositions(Object.fromEntries(Object.entries(S.positions).filter(([k]) => !drop[k])));
  draw();
}

function positions() {
  const missing = data.cards.filter((c) => !S.positions[c.id] && !layoutCache[c.id]);
  if (missing.length) Object.assign(layoutCache, autoLayout(data.cards, data.edges));
  const out = {};
  for (const c of data.cards) out[c.id] = S.positions[c.id] || layoutCache[c.id];
  return out;
}

// ---- drawing --------------------------------------------------------------------------------
let geom = { w: 0, h: 0, pad: 70 };
function toScreen([x, y]) {
  const { w, h, pad } = geom;
  const cx = w / 2;
  const cy = h / 2;
  const X = pad + (x / 1000) * (w - 2 * pad);
  const Y = 24 + (y / 1000) * (h - 48);
  return [cx + (X - cx) * zoom, cy + (Y - cy) * zoom];
}
function fromScreen([X, Y]) {
  const { w, h, pad } = geom;
  const cx = w / 2;
  const cy = h / 2;
  const x0 = cx + (X - cx) / zoom;
  const y0 = cy + (Y - cy) / zoom;
  return [((x0 - pad) / (w - 2 * pad)) * 1000, ((y0 - 24) / (h - 48)) * 1000];
}

export function cardPos(id) {
  const el = svg.querySelector(`g.card[data-id="${CSS.escape(id)}"]`);
  if (!el) return null;
  const r = el.querySelector("rect.box").getBoundingClientRect();
  return { x: r.left + r.width / 2, y: r.top + r.height / 2 };
}

function mk(tag, attrs = {}, parent = null) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.append(e);
  return e;
}

function cardLabel(c) {
  if (c.sn >= 0) return S.supernodes[c.sn]?.[0] ?? c.label;
  const n = S.byId.get(c.id);
  return n ? n.label || shortId(n) : c.label || c.id;
}
function cardSub(c) {
  if (c.sn >= 0) return `${c.members.length} members`;
  const n = S.byId.get(c.id);
  return n ? `${layerName(n)} · ${JSON.stringify(tokenAt(n.position))}` : "";
}
function trunc(s, n) {
  s = String(s);
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

function steerDelta(c) {
  if (!steerOverlay) return null;
  if (c.sn >= 0) {
    const label = S.supernodes[c.sn]?.[0];
    return (steerOverlay.supernodes || []).find((s) => s.label === label || (s.members && s.members.every((m) => c.members.includes(m)))) || null;
  }
  return (steerOverlay.nodes || []).find((n) => n.id === c.id) || null;
}

export function draw() {
  if (!svg) return;
  const r = bodyEl.getBoundingClientRect();
  geom = { w: r.width || 600, h: r.height || 300, pad: 70 };
  svg.setAttribute("viewBox", `0 0 ${geom.w} ${geom.h}`);
  svg.replaceChildren();
  hintEl.hidden = data.cards.length > 0;
  scoresFromGraph(data.scores);
  if (!data.cards.length) return;
  const P = positions();
  const defs = mk("defs", {}, svg);
  const marker = mk("marker", { id: "sg-arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "6", markerHeight: "6", orient: "auto-start-reverse" }, defs);
  mk("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#555" }, marker);
  mk("rect", { x: 0, y: 0, width: geom.w, height: geom.h, fill: "#fff" }, svg);
  const eg = mk("g", { class: "edges" }, svg);
  const sorted = [...data.edges].sort((a, b) => Math.abs(a.weight) - Math.abs(b.weight));
  for (const e of sorted) {
    if (!P[e.source] || !P[e.target]) continue;
    const [x1, y1] = toScreen(P[e.source]);
    const [x2, y2] = toScreen(P[e.target]);
    // End on the target card's border so the arrow head shows.
    const dy = y2 - y1;
    const dx = x2 - x1;
    const t = Math.min(1, Math.max(0, 1 - Math.min((CH / 2 / Math.max(1, Math.abs(dy))) * zoom, (CW / 2 / Math.max(1, Math.abs(dx))) * zoom)));
    const ex = x1 + dx * t;
    const ey = y1 + dy * t;
    const wpx = Math.max(0.6, Math.min(9, 15 * Math.abs(e.weight)));
    mk("line", { x1, y1, x2: ex, y2: ey, stroke: edgeColor(e.weight), "stroke-width": wpx, "stroke-opacity": 0.85, "marker-end": "url(#sg-arrow)" }, eg);
    if (Math.hypot(dx, dy) > 70) {
      const mx = x1 + dx * 0.5;
      const my = y1 + dy * 0.5;
      const tx = mk("text", { x: mx + 6, y: my, "font-size": 10, fill: edgeColor(e.weight), "font-family": "system-ui, sans-serif" }, eg);
      const a = Math.abs(e.weight);
      tx.textContent = `${signMark(e.weight)}${a >= 0.01 ? a.toFixed(2) : a.toPrecision(2)}`;
    }
  }
  const cg = mk("g", { class: "cards" }, svg);
  for (const c of data.cards) drawCard(cg, c, toScreen(P[c.id]));
}

function drawCard(parent, c, [x, y]) {
  const g = mk("g", { class: "card", "data-id": c.id, transform: `translate(${x - CW / 2},${y - CH / 2})` }, parent);
  if (c.sn >= 0) g.classList.add("supernode");
  if (S.selected === c.id) g.classList.add("selected");
  if (S.grouping.has(c.id)) g.classList.add("grouping");
  if (S.hovered === c.id) g.classList.add("hovered");
  mk("rect", { class: "box", width: CW, height: CH, rx: 5, fill: c.sn >= 0 ? "#f0f4fa" : "#fff", stroke: c.sn >= 0 ? "#2b5d9b" : "#777" }, g);
  const lab = mk("text", { x: 6, y: 15, class: c.sn >= 0 ? "sn-label" : "", "font-family": "system-ui, 'Noto Sans CJK SC', sans-serif", "font-size": 11, "font-weight": c.sn >= 0 ? 600 : 400 }, g);
  lab.textContent = trunc(cardLabel(c), 21);
  const sub = mk("text", { x: 6, y: 30, fill: "#666", "font-family": "system-ui, 'Noto Sans CJK SC', sans-serif", "font-size": 10 }, g);
  sub.textContent = trunc(cardSub(c), 24);
  const title = mk("title", {}, g);
  title.textContent = cardLabel(c);
  if (c.sn >= 0) {
    c.members.slice(0, 10).forEach((m, i) => mk("circle", { cx: CW - 8 - i * 7, cy: CH - 6, r: 2.5, fill: "#2b5d9b" }, g));
    const x = mk("text", { x: CW - 12, y: 12, class: "ungroup", "font-size": 12, fill: "#444" }, g);
    x.textContent = "×";
    x.addEventListener("mousedown", (e) => {
      e.stopPropagation();
      ungroup(c.id);
    });
    lab.addEventListener("mousedown", (e) => {
      if (e.ctrlKey || e.metaKey || S.grouping.size || grouping) return;
      e.stopPropagation();
      renameInline(c, g);
    });
  }
  const d = steerDelta(c);
  if (d && d.before != null && d.after != null) {
    const change = d.after - d.before;
    const rel = Math.abs(d.before) > 1e-9 ? change / Math.abs(d.before) : 0;
    const bar = mk("g", { class: "steer-delta" }, g);
    const w = Math.min(CW, Math.abs(rel) * CW);
    mk("rect", { x: rel >= 0 ? CW / 2 : CW / 2 - w / 2, y: CH + 2, width: Math.max(2, w / 2), height: 5, fill: change >= 0 ? "#2166ac" : "#d6604d" }, bar);
    const t = mk("text", { x: 0, y: CH + 17, "font-size": 10, fill: change >= 0 ? "#2166ac" : "#b2182b", "font-family": "system-ui, sans-serif" }, bar);
    t.textContent = `act ${d.before.toFixed(2)} → ${d.after.toFixed(2)} (${rel >= 0 ? "+" : "−"}${Math.abs(100 * rel).toFixed(0)}%)`;
  }
  g.addEventListener("mouseenter", () => setHover(c.id));
  g.addEventListener("mouseleave", () => setHover(null));
  g.addEventListener("mousedown", (e) => startDrag(e, c, g));
}

function startDrag(e, c, g) {
  if (e.button !== 0) return;
  e.preventDefault();
  const r = svg.getBoundingClientRect();
  const start = [e.clientX, e.clientY];
  let moved = false;
  const P0 = toScreen(positions()[c.id]); // the card's place now (the layout may have been redone since drawing)
  const move = (ev) => {
    const dx = ev.clientX - start[0];
    const dy = ev.clientY - start[1];
    if (Math.abs(dx) + Math.abs(dy) > 3) moved = true;
    if (!moved) return;
    const nx = P0[0] + (dx * geom.w) / r.width;
    const ny = P0[1] + (dy * geom.h) / r.height;
    g.setAttribute("transform", `translate(${nx - CW / 2},${ny - CH / 2})`);
    layoutCache[c.id] = fromScreen([nx, ny]);
  };
  const up = (ev) => {
    window.removeEventListener("mousemove", move);
    window.removeEventListener("mouseup", up);
    if (moved) {
      const p = layoutCache[c.id].map((v) => Math.round(Math.max(0, Math.min(1000, v)) * 10) / 10);
      setPositions({ [c.id]: p });
      return;
    }
    emit("card-click", { id: c.id, ctrl: ev.ctrlKey || ev.metaKey });
  };
  window.addEventListener("mousemove", move);
  window.addEventListener("mouseup", up);
}

on("card-click", ({ id, ctrl }) => {
  if (S.grouping.size || grouping || window.__groupHeld) {
    if (S.grouping.has(id)) S.grouping.delete(id);
    else S.grouping.add(id);
    emit("grouping");
  } else if (ctrl) {
    if (id.startsWith("sn:")) ungroup(id);
    else togglePin(id);
  } else select(id);
});

function renameInline(c, g) {
  const rect = g.getBoundingClientRect();
  const host = bodyEl.getBoundingClientRect();
  const input = document.createElement("input");
  input.className = "sg-label-input";
  input.value = S.supernodes[c.sn]?.[0] ?? "";
  input.style.left = `${rect.left - host.left}px`;
  input.style.top = `${rect.top - host.top}px`;
  input.style.width = `${Math.max(CW, rect.width)}px`;
  bodyEl.append(input);
  input.focus();
  input.select();
  let done = false;
  const commit = (ok) => {
    if (done) return;
    done = true;
    if (ok) renameSupernode(c.sn, input.value);
    input.remove();
  };
  input.addEventListener("keydown", (e) => {
    e.stopPropagation();
    if (e.key === "Enter") commit(true);
    if (e.key === "Escape") commit(false);
  });
  input.addEventListener("blur", () => commit(true));
}

function markHover(id) {
  for (const g of svg.querySelectorAll("g.card")) g.classList.toggle("hovered", g.dataset.id === id);
}

export function svgElement() {
  return svg;
}
export function cards() {
  return data.cards;
}
