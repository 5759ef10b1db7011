// `/` search: nodes by label, id, token or layer ("L3"), first in the loaded view (instant), then the
// server's search over the whole graph (hidden nodes too). Enter jumps to a node, Ctrl+Enter pins it.

import { loadView, pin } from "./actions.js";
import { api, enc } from "./api.js";
import { centerOn } from "./linkgraph.js";
import { S, glyph, layerName, nodeLabel, selectOnly, tokenAt } from "./state.js";

const $ = (id) => document.getElementById(id);
let results = [];
let active = 0;
let seq = 0;

export function init() {
  const q = $("search-q");
  let t = null;
  q.addEventListener("input", () => {
    localSearch(q.value);
    clearTimeout(t);
    t = setTimeout(() => serverSearch(q.value), 150);
  });
  q.addEventListener("keydown", (e) => {
    e.stopPropagation();
    if (e.key === "Escape") close();
    else if (e.key === "ArrowDown") move(1, e);
    else if (e.key === "ArrowUp") move(-1, e);
    else if (e.key === "Enter" && results[active]) choose(results[active], e.ctrlKey || e.metaKey);
  });
}

export function open() {
  if (!S.graphId) return;
  $("search").hidden = false;
  $("search-q").value = "";
  results = [];
  draw();
  setTimeout(() => $("search-q").focus(), 0);
}
export function close() {
  $("search").hidden = true;
}

function move(d, e) {
  e.preventDefault();
  active = Math.max(0, Math.min(results.length - 1, active + d));
  draw();
}

export function match(n, q) {
  const s = q.trim().toLowerCase();
  if (!s) return false;
  const lm = s.match(/^l(\d+)$/);
  if (lm) return (n.kind === "feature" || n.kind === "error") && n.layer === Number(lm[1]);
  if (s === "emb") return n.kind === "embedding";
  if (s === "lgt" || s === "logit") return n.kind === "logit";
  return (
    (n.label || "").toLowerCase().includes(s) ||
    (n.auto_label || "").toLowerCase().includes(s) ||
    n.id.toLowerCase().includes(s) ||
    String(n.token ?? tokenAt(n.position)).toLowerCase().includes(s)
  );
}

function localSearch(q) {
  results = S.nodes.filter((n) => match(n, q)).slice(0, 200);
  active = 0;
  draw();
}

async function serverSearch(q) {
  const mine = ++seq;
  if (!q.trim()) return;
  try {
    const res = await api.get(`/api/graphs/${enc(S.graphId)}/search?q=${enc(q)}`);
    if (mine !== seq) return;
    const list = Array.isArray(res) ? res : res.nodes || res.results || [];
    const have = new Set(results.map((r) => r.id));
    for (const n of list) if (!have.has(n.id)) results.push({ ...n, hiddenNode: !S.byId.has(n.id) });
    draw();
  } catch {
    /* the local results stand on their own */
  }
}

function draw() {
  const ul = $("search-results");
  ul.replaceChildren(
    ...results.slice(0, 200).map((n, i) => {
      const li = document.createElement("li");
      if (i === active) li.className = "active";
      const g = document.createElement("span");
      g.textContent = glyph(n);
      const lab = document.createElement("span");
      lab.style.flex = "1";
      lab.textContent = S.byId.has(n.id) ? nodeLabel(S.byId.get(n.id)) : n.label || n.id;
      const meta = document.createElement("span");
      meta.className = "muted";
      meta.textContent = `${layerName(n)} · ${n.position} ${JSON.stringify(n.token ?? tokenAt(n.position))}${n.hiddenNode ? " · hidden" : ""}`;
      const p = document.createElement("button");
      p.textContent = "pin";
      p.addEventListener("click", (e) => {
        e.stopPropagation();
        choose(n, true);
      });
      li.append(g, lab, meta, p);
      li.addEventListener("click", () => choose(n, false));
      return li;
    }),
  );
  if (!results.length && $("search-q").value.trim()) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "no match";
    ul.append(li);
  }
}

async function choose(n, doPin) {
  close();
  if (doPin) pin(n.id);
  if (!S.byId.has(n.id)) {
    S.selected = n.id; // kept by the next view even if pruned
    await loadView();
  }
  selectOnly(n.id);
  centerOn(n.id);
}
