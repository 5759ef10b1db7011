// The link graph: tokens along x, layers up y (embeddings at the bottom, logits on top), drawn on two canvases
// (base = bands, grid and nodes, redrawn on zoom / pan / data; overlay = edges of the selection, pins and hover,
// redrawn on every hover), with a uniform-grid spatial index so hover is a handful of lookups at 10k nodes.

import { edgeColor, edgeWidth, signMark } from "./colors.js";
import { S, emit, groupOf, isPinned, layerName, nodeLabel, on, select, setHover, tokenAt, visibleToken } from "./state.js";

const LEFT = 34; // screen px for the layer axis
const TOP = 26; // room for logit tokens
const BOTTOM = 64; // room for rotated prompt tokens
const SPACING = 11; // world px between nodes of a cell
const MINCOL = 46;
const HIT = 30; // hover radius, screen px
const CELL = 24; // spatial-index cell, world px

const L = {
  x: new Float32Array(0),
  y: new Float32Array(0),
  colLeft: [],
  colRight: [],
  width: 0,
  height: 0,
  bandH: 20,
  nBands: 2,
  grid: new Map(),
};
const T = { k: 1, tx: LEFT, ty: TOP };
let base, over, body, tooltip;
let W = 0;
let H = 0;
let dpr = 1;
let drag = null;
let lastMouse = null;
let raf = 0;
let rafOver = 0;
let ctrlHeld = false; // the tooltip says what a Ctrl/Cmd-click will do

export function bandOf(n) {
  if (n.kind === "embedding") return 0;
  if (n.kind === "logit") return (S.meta?.n_layers ?? 0) + 1;
  return (n.layer ?? 0) + 1;
}

export function init() {
  body = document.getElementById("lg-body");
  base = document.getElementById("lg-base");
  over = document.getElementById("lg-over");
  tooltip = document.getElementById("tooltip");
  new ResizeObserver(() => resize(true)).observe(body);
  body.addEventListener("mousemove", onMove);
  body.addEventListener("mouseleave", () => {
    lastMouse = null;
    hideTip();
    setHover(null);
  });
  body.addEventListener("mousedown", onDown);
  for (const type of ["keydown", "keyup"])
    window.addEventListener(type, (e) => {
      const held = e.ctrlKey || e.metaKey;
      if (held !== ctrlHeld) {
        ctrlHeld = held;
        updateTip();
      }
    });
  window.addEventListener("mouseup", onUp);
  body.addEventListener("wheel", onWheel, { passive: false });
  on("view", () => {
    const t0 = performance.now();
    computeLayout();
    fit(false);
    drawBase();
    // performance.now() counts from navigation start: this is the page's first paint of the graph.
    const t = (window.__atlasTimings = window.__atlasTimings || {});
    t.layoutDrawMs = performance.now() - t0;
    if (t.firstPaintMs === undefined) t.firstPaintMs = performance.now();
  });
  on("hover", () => {
    drawOverlaySoon();
    updateTip();
  });
  on("select", drawOverlaySoon);
  on("pins", () => {
    drawBase();
    drawOverlaySoon();
  });
  on("labels", drawBase);
  on("grouping", drawOverlaySoon);
  on("csr", drawOverlaySoon);
  document.querySelector("#p-linkgraph [data-fit]").addEventListener("click", () => fit(true));
}

function resize(redraw) {
  const r = body.getBoundingClientRect();
  if (r.width === 0 || r.height === 0) return;
  const changed = Math.abs(r.width - W) > 0.5 || Math.abs(r.height - H) > 0.5;
  W = r.width;
  H = r.height;
  dpr = window.devicePixelRatio || 1;
  for (const c of [base, over]) {
    c.width = Math.round(W * dpr);
    c.height = Math.round(H * dpr);
    c.style.width = `${W}px`;
    c.style.height = `${H}px`;
  }
  if (changed && S.nodes.length) {
    computeLayout();
    fit(false);
  }
  if (redraw) {
    drawBase();
    drawOverlay();
  }
}

// ---- layout ---------------------------------------------------------------------------------
export function computeLayout() {
  const nodes = S.nodes;
  const nLayers = S.meta?.n_layers ?? Math.max(0, ...nodes.map((n) => (n.kind === "feature" || n.kind === "error" ? n.layer + 1 : 0)));
  const nPos = Math.max(S.meta?.tokens?.length ?? 0, ...nodes.map((n) => n.position + 1));
  L.nBands = nLayers + 2;
  const availH = Math.max(120, H - TOP - BOTTOM);
  L.bandH = Math.max(16, availH / L.nBands);
  L.height = L.bandH * L.nBands;
  // Cells (position, band) -> node indices; column width follows its busiest cell.
  const cells = new Map();
  nodes.forEach((n, i) => {
    const key = n.position * 1000 + bandOf(n);
    if (!cells.has(key)) cells.set(key, []);
    cells.get(key).push(i);
  });
  const busiest = new Array(nPos).fill(1);
  for (const [key, list] of cells) {
    const p = Math.floor(key / 1000);
    busiest[p] = Math.max(busiest[p], list.length);
  }
  let widths = busiest.map((c) => Math.max(MINCOL, c * SPACING + 10));
  const total = widths.reduce((a, b) => a + b, 0);
  const availW = Math.max(200, W - LEFT - 40);
  if (total < availW) widths = widths.map((w) => (w * availW) / total); // short prompts fill the panel
  L.colLeft = [];
  L.colRight = [];
  let acc = 0;
  for (const w of widths) {
    L.colLeft.push(acc);
    acc += w;
    L.colRight.push(acc);
  }
  L.width = acc;
  L.x = new Float32Array(nodes.length);
  L.y = new Float32Array(nodes.length);
  for (const [key, list] of cells) {
    const p = Math.floor(key / 1000);
    const b = key % 1000;
    const colW = L.colRight[p] - L.colLeft[p];
    // Spread a cell's nodes over its column (up to 22 px apart), tighter only when it is crowded.
    const s = Math.min(22, (colW - 12) / list.length);
    // Most probable logit right-most; features by importance (lowest influence rank) right-most.
    list.sort((a, c) => {
      const na = nodes[a];
      const nc = nodes[c];
      if (na.kind === "logit") return (nc.probability ?? 0) - (na.probability ?? 0);
      if (na.cumulative != null && nc.cumulative != null) return na.cumulative - nc.cumulative;
      return (nc.influence ?? 0) - (na.influence ?? 0);
    });
    list.forEach((idx, j) => {
      L.x[idx] = L.colRight[p] - 6 - j * s;
      L.y[idx] = L.height - (b + 0.5) * L.bandH;
    });
  }
  L.grid = new Map();
  for (let i = 0; i < nodes.length; i++) {
    const key = gridKey(Math.floor(L.x[i] / CELL), Math.floor(L.y[i] / CELL));
    if (!L.grid.has(key)) L.grid.set(key, []);
    L.grid.get(key).push(i);
  }
}
function gridKey(cx, cy) {
  return (cx + 32768) * 65536 + (cy + 32768);
}

export function fit(redraw = true) {
  const availW = Math.max(50, W - LEFT - 40);
  const availH = Math.max(50, H - TOP - BOTTOM);
  const k = Math.min(1, availW / Math.max(1, L.width), availH / Math.max(1, L.height));
  // Long prompts: keep the height readable and let the user scroll sideways instead of shrinking to dots.
  T.k = L.width * k < availW * 0.999 || k > 0.35 ? k : Math.min(1, availH / L.height);
  T.tx = LEFT;
  T.ty = TOP + (availH - L.height * T.k) / 2;
  if (redraw) {
    drawBase();
    drawOverlay();
  }
}

export function centerOn(id) {
  const i = S.index.get(id);
  if (i === undefined) return;
  T.tx = W / 2 - L.x[i] * T.k;
  T.ty = H / 2 - L.y[i] * T.k;
  drawBase();
  drawOverlay();
}

const sx = (x) => x * T.k + T.tx;
const sy = (y) => y * T.k + T.ty;

/** Client coordinates of a node's glyph (used by tests and the bench). */
export function screenPos(id) {
  const i = S.index.get(id);
  if (i === undefined) return null;
  const r = body.getBoundingClientRect();
  return { x: r.left + sx(L.x[i]), y: r.top + sy(L.y[i]) };
}

// ---- hit test -------------------------------------------------------------------------------
export function nearest(mx, my) {
  const wx = (mx - T.tx) / T.k;
  const wy = (my - T.ty) / T.k;
  const r = HIT / T.k;
  const c0 = Math.floor((wx - r) / CELL);
  const c1 = Math.floor((wx + r) / CELL);
  const r0 = Math.floor((wy - r) / CELL);
  const r1 = Math.floor((wy + r) / CELL);
  let best = -1;
  let bestD = r * r;
  for (let cx = c0; cx <= c1; cx++)
    for (let cy = r0; cy <= r1; cy++) {
      const list = L.grid.get(gridKey(cx, cy));
      if (!list) continue;
      for (const i of list) {
        const dx = L.x[i] - wx;
        const dy = L.y[i] - wy;
        const d = dx * dx + dy * dy;
        if (d < bestD) {
          bestD = d;
          best = i;
        }
      }
    }
  return best;
}

function local(e) {
  const r = body.getBoundingClientRect();
  return [e.clientX - r.left, e.clientY - r.top];
}

function onMove(e) {
  const [mx, my] = local(e);
  lastMouse = [mx, my];
  if (drag) {
    const dx = mx - drag.x;
    const dy = my - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
    if (drag.moved) {
      T.tx = drag.tx + dx;
      T.ty = drag.ty + dy;
      drawBaseSoon();
    }
    return;
  }
  if (e.shiftKey) return; // Shift freezes the hover, so the pointer can travel to another panel.
  const i = nearest(mx, my);
  setHover(i >= 0 ? S.nodes[i].id : null);
}

function onDown(e) {
  if (e.button !== 0) return;
  const [mx, my] = local(e);
  drag = { x: mx, y: my, tx: T.tx, ty: T.ty, moved: false, ctrl: e.ctrlKey || e.metaKey };
}

function onUp(e) {
  if (!drag) return;
  const d = drag;
  drag = null;
  if (d.moved) return;
  const i = nearest(d.x, d.y);
  const id = i >= 0 ? S.nodes[i].id : null;
  emit("node-click", { id, ctrl: d.ctrl || e.ctrlKey || e.metaKey, from: "linkgraph" });
  if (!id && !d.ctrl && S.selected) select(S.selected); // empty space clears the selection
}

function onWheel(e) {
  e.preventDefault();
  const [mx, my] = local(e);
  if (e.shiftKey || Math.abs(e.deltaX) > Math.abs(e.deltaY)) {
    T.tx -= e.shiftKey ? e.deltaY : e.deltaX;
  } else {
    const f = Math.exp(-e.deltaY * 0.0015);
    const k = Math.max(0.05, Math.min(30, T.k * f));
    T.tx = mx - ((mx - T.tx) * k) / T.k;
    T.ty = my - ((my - T.ty) * k) / T.k;
    T.k = k;
  }
  drawBaseSoon();
}

// ---- tooltip --------------------------------------------------------------------------------
function updateTip() {
  const id = S.hovered;
  const n = id ? S.byId.get(id) : null;
  if (!n || !lastMouse) return hideTip();
  const i = S.index.get(id);
  const act = n.activation != null ? `  act ${Number(n.activation).toFixed(2)}` : "";
  const prob = n.probability != null ? `  p=${Number(n.probability).toFixed(3)}` : "";
  const hint = ctrlHeld ? `\nCtrl-click to ${isPinned(id) ? "unpin" : "pin"}` : isPinned(id) ? "  (pinned)" : "";
  tooltip.textContent = `${nodeLabel(n)}\n${layerName(n)} · ${n.position}: ${JSON.stringify(tokenAt(n.position))}${act}${prob}${hint}`;
  tooltip.hidden = false;
  const x = sx(L.x[i]);
  const y = sy(L.y[i]);
  tooltip.style.left = `${Math.min(W - 200, x + 12)}px`;
  tooltip.style.top = `${Math.max(0, y - 40)}px`;
}
function hideTip() {
  tooltip.hidden = true;
}

// ---- drawing --------------------------------------------------------------------------------
function drawBaseSoon() {
  if (raf) return;
  raf = requestAnimationFrame(() => {
    raf = 0;
    drawBase();
    drawOverlay();
  });
}
function drawOverlaySoon() {
  if (rafOver) return;
  rafOver = requestAnimationFrame(() => {
    rafOver = 0;
    drawOverlay();
  });
}

export function drawBase(ctx = null, w = W, h = H) {
  if (!base) return;
  if (!ctx) {
    ctx = base.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  }
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, w, h);
  if (!S.nodes.length) return;
  // Bands: Emb and Lgt slightly darker, white lines between.
  for (let b = 0; b < L.nBands; b++) {
    const y0 = sy(L.height - (b + 1) * L.bandH);
    const bh = L.bandH * T.k;
    ctx.fillStyle = b === 0 || b === L.nBands - 1 ? "#ececec" : b % 2 ? "#f7f7f7" : "#f3f3f3";
    ctx.fillRect(sx(0), y0, L.width * T.k, bh);
  }
  ctx.strokeStyle = "#e2e2e2";
  ctx.lineWidth = 1;
  ctx.beginPath();
  for (const r of L.colRight) {
    ctx.moveTo(sx(r), sy(0));
    ctx.lineTo(sx(r), sy(L.height));
  }
  ctx.stroke();
  drawNodes(ctx, w, h);
  drawAxes(ctx, w, h);
}

function glyphR() {
  return Math.max(2, Math.min(7, 4 * Math.sqrt(T.k)));
}

function drawNodes(ctx, w, h) {
  const nodes = S.nodes;
  const r = glyphR();
  const vis = (i) => {
    const x = sx(L.x[i]);
    const y = sy(L.y[i]);
    return x > -10 && x < w + 10 && y > -10 && y < h + 10;
  };
  const paths = { feature: new Path2D(), error: new Path2D(), square: new Path2D() };
  for (let i = 0; i < nodes.length; i++) {
    if (!vis(i)) continue;
    const x = sx(L.x[i]);
    const y = sy(L.y[i]);
    const kind = nodes[i].kind;
    if (kind === "feature") {
      paths.feature.moveTo(x + r, y);
      paths.feature.arc(x, y, r, 0, Math.PI * 2);
    } else if (kind === "error") {
      paths.error.moveTo(x, y - r * 1.2);
      paths.error.lineTo(x + r * 1.2, y);
      paths.error.lineTo(x, y + r * 1.2);
      paths.error.lineTo(x - r * 1.2, y);
      paths.error.closePath();
    } else paths.square.rect(x - r, y - r, 2 * r, 2 * r);
  }
  ctx.lineWidth = 0.8;
  ctx.fillStyle = "#d9d9d9";
  ctx.strokeStyle = "#666";
  ctx.fill(paths.feature);
  ctx.stroke(paths.feature);
  ctx.globalAlpha = 0.5;
  ctx.fillStyle = "#bdbdbd";
  ctx.fill(paths.error);
  ctx.stroke(paths.error);
  ctx.globalAlpha = 1;
  ctx.fillStyle = "#9e9e9e";
  ctx.fill(paths.square);
  ctx.stroke(paths.square);
  // Supernode members get a small tick so groups are visible in the big picture.
  ctx.fillStyle = "#2b5d9b";
  for (let i = 0; i < nodes.length; i++) {
    if (groupOf(nodes[i].id) >= 0 && vis(i)) ctx.fillRect(sx(L.x[i]) - 1, sy(L.y[i]) - r - 4, 2, 3);
  }
  // Logit tokens above their nodes.
  ctx.fillStyle = "#333";
  ctx.font = "11px system-ui, 'Noto Sans CJK SC', sans-serif";
  ctx.textAlign = "center";
  for (let i = 0; i < nodes.length; i++) {
    if (nodes[i].kind !== "logit" || !vis(i)) continue;
    ctx.fillText(String(nodes[i].logit_token ?? nodes[i].token ?? ""), sx(L.x[i]), sy(L.y[i]) - r - 3);
  }
}

function drawAxes(ctx, w, h) {
  // Layer labels on a white strip at the left, every band when room allows.
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, LEFT - 2, h);
  ctx.fillStyle = "#555";
  ctx.font = "10px system-ui, sans-serif";
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  const every = L.bandH * T.k < 12 ? Math.ceil(12 / (L.bandH * T.k)) : 1;
  for (let b = 0; b < L.nBands; b++) {
    if (b % every && b !== L.nBands - 1) continue;
    const name = b === 0 ? "Emb" : b === L.nBands - 1 ? "Lgt" : `L${b - 1}`;
    ctx.fillText(name, LEFT - 5, sy(L.height - (b + 0.5) * L.bandH));
  }
  // Prompt tokens, rotated, under each column's right edge.
  ctx.textBaseline = "alphabetic";
  ctx.font = "11px system-ui, 'Noto Sans CJK SC', 'Noto Sans CJK JP', sans-serif";
  ctx.fillStyle = "#222";
  const yb = sy(L.height) + 12;
  for (let p = 0; p < L.colRight.length; p++) {
    const x = sx(L.colRight[p]) - 4;
    if (x < LEFT - 10 || x > w + 40) continue;
    ctx.save();
    ctx.translate(x, yb);
    ctx.rotate(-Math.PI / 5);
    ctx.textAlign = "right";
    ctx.fillText(visibleToken(tokenAt(p)), 0, 0);
    ctx.restore();
  }
  // Horizontal scroll indicator when the graph is wider than the panel.
  const gw = L.width * T.k;
  if (gw > w - LEFT) {
    const frac = (w - LEFT) / gw;
    const start = Math.max(0, Math.min(1 - frac, (LEFT - T.tx) / gw));
    ctx.fillStyle = "#0003";
    ctx.fillRect(LEFT + start * (w - LEFT), h - 4, frac * (w - LEFT), 3);
  }
}

/** Edges to draw: all in/out edges of the selected node; else the edges between pinned nodes. */
export function overlayEdges() {
  const out = [];
  if (!S.links || !S.csr) return out;
  const { inStart, inList, outStart, outList } = S.csr;
  const sel = S.selected != null ? S.index.get(S.selected) : undefined;
  if (sel !== undefined) {
    for (let j = inStart[sel]; j < inStart[sel + 1]; j++) out.push(inList[j]);
    for (let j = outStart[sel]; j < outStart[sel + 1]; j++) out.push(outList[j]);
  } else if (S.pinned.length > 1) {
    const pinned = new Set(S.pinned.map((id) => S.index.get(id)).filter((i) => i !== undefined));
    for (const i of pinned) for (let j = outStart[i]; j < outStart[i + 1]; j++) if (pinned.has(S.links.tgt[outList[j]])) out.push(outList[j]);
  }
  out.sort((a, b) => Math.abs(S.links.pct[a]) - Math.abs(S.links.pct[b]));
  return out;
}

export function drawOverlay(ctx = null) {
  if (!over) return;
  if (!ctx) {
    ctx = over.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, W, H);
  }
  if (!S.nodes.length) return;
  const lk = S.links;
  const edges = overlayEdges();
  const r = glyphR();
  const sel = S.selected != null ? S.index.get(S.selected) : undefined;
  // Halo, then colour, thinnest first so the strongest sit on top.
  ctx.lineCap = "round";
  for (const e of edges) {
    const a = lk.src[e];
    const b = lk.tgt[e];
    const p = lk.pct[e];
    ctx.strokeStyle = "rgba(40,40,40,0.35)";
    ctx.lineWidth = edgeWidth(p) + 1.2;
    ctx.beginPath();
    ctx.moveTo(sx(L.x[a]), sy(L.y[a]));
    ctx.lineTo(sx(L.x[b]), sy(L.y[b]));
    ctx.stroke();
    ctx.strokeStyle = edgeColor(p);
    ctx.lineWidth = edgeWidth(p);
    ctx.stroke();
  }
  // ± marks on the strongest edges (sign is not carried by colour alone).
  ctx.font = "bold 11px system-ui, sans-serif";
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  const strong = edges.slice(-60);
  for (const e of strong) {
    const a = lk.src[e];
    const b = lk.tgt[e];
    const x0 = sx(L.x[a]);
    const y0 = sy(L.y[a]);
    const x1 = sx(L.x[b]);
    const y1 = sy(L.y[b]);
    if (Math.hypot(x1 - x0, y1 - y0) < 40) continue;
    const mx = x0 + (x1 - x0) * 0.6;
    const my = y0 + (y1 - y0) * 0.6;
    ctx.fillStyle = "#fff";
    ctx.fillRect(mx - 4, my - 5, 8, 10);
    ctx.fillStyle = edgeColor(lk.pct[e]);
    ctx.fillText(signMark(lk.weight[e]), mx, my);
  }
  // Neighbours of the selection filled with their edge colour.
  if (sel !== undefined) {
    for (const e of edges) {
      const other = lk.src[e] === sel ? lk.tgt[e] : lk.src[e];
      ctx.fillStyle = edgeColor(lk.pct[e]);
      ctx.beginPath();
      ctx.arc(sx(L.x[other]), sy(L.y[other]), r, 0, Math.PI * 2);
      ctx.fill();
    }
  }
  const ring = (i, color, width, dash, rr = r + 2.5) => {
    ctx.strokeStyle = color;
    ctx.lineWidth = width;
    ctx.setLineDash(dash);
    ctx.beginPath();
    ctx.arc(sx(L.x[i]), sy(L.y[i]), rr, 0, Math.PI * 2);
    ctx.stroke();
    ctx.setLineDash([]);
  };
  for (const id of S.pinned) {
    const i = S.index.get(id);
    if (i !== undefined) ring(i, "#222", 2.2, [], r + 1.5);
  }
  for (const id of S.grouping) {
    const i = S.index.get(id);
    if (i !== undefined) ring(i, "#e08214", 2.5, [3, 2], r + 4);
  }
  if (sel !== undefined) ring(sel, "#c51b7d", 2.5, []);
  const hov = S.hovered != null ? S.index.get(S.hovered) : undefined;
  if (hov !== undefined) ring(hov, "#c51b7d", 1.8, [3, 2], r + 5);
}

// ---- export ---------------------------------------------------------------------------------
export function pngCanvas(scale = 3) {
  const c = document.createElement("canvas");
  c.width = Math.round(W * scale);
  c.height = Math.round(H * scale);
  const ctx = c.getContext("2d");
  ctx.setTransform(scale, 0, 0, scale, 0, 0);
  drawBase(ctx, W, H);
  drawOverlay(ctx);
  return c;
}

export function geometry() {
  return { L, T, W, H, LEFT, TOP, r: glyphR(), sx, sy };
}
