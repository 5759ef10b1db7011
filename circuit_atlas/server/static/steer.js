// Steering: rows for pinned features and supernodes (expandable to per-position multipliers and one for the
// generated tokens; set / scale, 0 = ablate), mode, tokens to generate, seed; runs as a server job and shows
// top-k logits and generations before / after; each run is kept with the graph's working state.

import { api, waitJob } from "./api.js";
import { guessPair, modelPairs } from "./models.js";
import { S, emit, groupOf, on, shortId, tokenAt } from "./state.js";

let bodyEl;
const rowState = new Map(); // row key -> {on, mode, value, where, generated, grid: {pos: value}, gen}
let shown = null; // run shown in the result box
let lastMsg = { text: "", error: false }; // survives re-renders of the panel

export function init() {
  bodyEl = document.getElementById("steer-body");
  on("pins", render);
  on("labels", render);
  on("view", render);
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function rows() {
  const out = [];
  S.supernodes.forEach((g, i) => out.push({ key: `sn:${g.slice(1).join(",")}`, label: `supernode “${g[0]}”`, supernode: g.slice(1), index: i }));
  for (const id of S.pinned) {
    const n = S.byId.get(id);
    if (groupOf(id) >= 0 || (n && n.kind !== "feature") || (!n && !id.startsWith("feat:"))) continue;
    out.push({ key: id, label: n ? n.label || shortId(n) : id, node: id });
  }
  return out;
}

function stateOf(key) {
  if (!rowState.has(key)) rowState.set(key, { on: true, mode: "scale", value: 0, where: "own", generated: false, grid: {}, gen: "", open: false });
  return rowState.get(key);
}

function render() {
  if (!bodyEl) return;
  const frag = document.createDocumentFragment();
  const list = rows();
  if (!list.length) frag.append(el("p", "muted", "Pin features or make supernodes to steer them."));
  for (const r of list) frag.append(rowEl(r));
  const opts = el("div", "steer-opts");
  const mode = el("select");
  mode.id = "steer-mode";
  for (const [v, t] of [
    ["frozen_attention", "frozen attention"],
    ["free", "free"],
    ["constrained", "constrained"],
  ])
    mode.append(Object.assign(el("option", "", t), { value: v }));
  mode.value = bodyEl.dataset.mode || "frozen_attention";
  mode.addEventListener("change", () => (bodyEl.dataset.mode = mode.value));
  const num = (id, v, title) => {
    const i = el("input");
    i.type = "number";
    i.id = id;
    i.value = bodyEl.dataset[id] ?? v;
    i.title = title;
    i.addEventListener("change", () => (bodyEl.dataset[id] = i.value));
    return i;
  };
  opts.append(
    el("label", "", "mode "),
    mode,
    el("label", "", "tokens"),
    num("steerTokens", 8, "tokens to generate"),
    el("label", "", "seed"),
    num("steerSeed", 16, "sampling seed"),
    el("label", "", "top-k"),
    num("steerTopk", 5, "logits shown"),
  );
  const pairSel = el("select");
  pairSel.id = "steer-model";
  pairSel.title = "model / transcoders to run (the ones the graph was traced with)";
  modelPairs()
    .then((list) => {
      const guess = guessPair(S.meta, list);
      for (const p of list) {
        const o = el("option", "", `${p.model} / ${p.transcoders}`);
        o.value = JSON.stringify(p);
        pairSel.append(o);
      }
      if (guess) pairSel.value = bodyEl.dataset.pair || JSON.stringify({ model: guess.model, transcoders: guess.transcoders });
    })
    .catch(() => pairSel.append(el("option", "", "no models on this server")));
  pairSel.addEventListener("change", () => (bodyEl.dataset.pair = pairSel.value));
  opts.append(el("label", "", "model"), pairSel);
  const run = el("button", "primary", "Run steer");
  run.id = "steer-run";
  run.disabled = !list.length;
  const msg = el("div", "msg");
  msg.id = "steer-msg";
  msg.textContent = lastMsg.text;
  if (lastMsg.error) msg.classList.add("error");
  run.addEventListener("click", () => go(msg, run));
  frag.append(opts, run, msg);
  const res = el("div", "");
  res.id = "steer-result";
  frag.append(res);
  if (S.steerRuns.length) {
    const hist = el("div", "run");
    hist.append(el("h5", "", `Past runs (${S.steerRuns.length})`));
    S.steerRuns
      .slice()
      .reverse()
      .slice(0, 20)
      .forEach((run) => {
        const b = el("button", "", `${run.at?.slice(11, 19) || ""} ${run.summary || ""}`);
        b.style.display = "block";
        b.style.textAlign = "left";
        b.addEventListener("click", () => showResult(run));
        hist.append(b);
      });
    frag.append(hist);
  }
  bodyEl.replaceChildren(frag);
  if (shown) showResult(shown, false);
}

function rowEl(r) {
  const st = stateOf(r.key);
  const box = el("div", "steer-row");
  box.dataset.key = r.key;
  const top = el("div", "top");
  const cb = el("input");
  cb.type = "checkbox";
  cb.checked = st.on;
  cb.addEventListener("change", () => (st.on = cb.checked));
  const name = el("span", "name", r.label);
  name.title = r.supernode ? r.supernode.join(", ") : r.node;
  const mode = el("select");
  for (const v of ["scale", "set"]) mode.append(Object.assign(el("option", "", v === "scale" ? "×" : "="), { value: v, title: v }));
  mode.value = st.mode;
  mode.title = "scale: multiply the activation; set: replace it (0 = ablate in both)";
  mode.addEventListener("change", () => (st.mode = mode.value));
  const val = el("input");
  val.type = "number";
  val.step = "0.1";
  val.value = st.value;
  val.className = "steer-value";
  val.addEventListener("input", () => (st.value = Number(val.value)));
  const where = el("select");
  for (const [v, t] of [
    ["own", "where active"],
    ["all", "every position"],
    ["grid", "per position…"],
  ])
    where.append(Object.assign(el("option", "", t), { value: v }));
  where.value = st.where;
  const gen = el("label", "small");
  const gcb = el("input");
  gcb.type = "checkbox";
  gcb.checked = st.generated;
  gcb.addEventListener("change", () => (st.generated = gcb.checked));
  gen.append(gcb, " +gen");
  gen.title = "also on every generated token";
  top.append(cb, name, mode, val, where, gen);
  box.append(top);
  if (r.supernode) {
    const det = el("details", "small");
    det.append(el("summary", "", `${r.supernode.length} members`));
    for (const m of r.supernode) {
      const n = S.byId.get(m);
      det.append(el("div", "muted", n ? `${n.label || shortId(n)} · L${n.layer} · ${n.position}` : m));
    }
    box.append(det);
  }
  const grid = el("div", "pos-grid");
  const drawGrid = () => {
    grid.replaceChildren();
    grid.hidden = st.where !== "grid";
    if (grid.hidden) return;
    (S.meta?.tokens || []).forEach((t, p) => {
      const lab = el("label", "", `${p} ${String(t).slice(0, 6)}`);
      const i = el("input");
      i.type = "number";
      i.step = "0.1";
      i.placeholder = "–";
      i.value = st.grid[p] ?? "";
      i.addEventListener("input", () => {
        if (i.value === "") delete st.grid[p];
        else st.grid[p] = Number(i.value);
      });
      lab.append(i);
      grid.append(lab);
    });
    const lab = el("label", "", "gen");
    const i = el("input");
    i.type = "number";
    i.step = "0.1";
    i.placeholder = "–";
    i.value = st.gen;
    i.addEventListener("input", () => (st.gen = i.value));
    lab.append(i);
    grid.append(lab);
  };
  where.addEventListener("change", () => {
    st.where = where.value;
    drawGrid();
  });
  drawGrid();
  box.append(grid);
  return box;
}

function interventions() {
  const out = [];
  const nPos = S.meta?.tokens?.length ?? 0;
  for (const r of rows()) {
    const st = stateOf(r.key);
    if (!st.on) continue;
    const subject = r.supernode ? { supernode: r.supernode } : { node: r.node };
    if (st.where === "grid") {
      const byVal = new Map();
      for (const [p, v] of Object.entries(st.grid)) {
        if (!byVal.has(v)) byVal.set(v, []);
        byVal.get(v).push(Number(p));
      }
      for (const [v, ps] of byVal) out.push({ ...subject, mode: st.mode, value: v, positions: ps.sort((a, b) => a - b), generated: false });
      if (st.gen !== "") out.push({ ...subject, mode: st.mode, value: Number(st.gen), positions: [], generated: true });
    } else {
      const iv = { ...subject, mode: st.mode, value: Number(st.value), generated: st.generated };
      if (st.where === "all") iv.positions = [...Array(nPos).keys()];
      out.push(iv);
    }
  }
  return out;
}

async function go(msg, btn) {
  const ivs = interventions();
  msg.className = "msg";
  if (!ivs.length) {
    msg.textContent = "Nothing to steer: tick a row (and, per position, fill in at least one value).";
    msg.classList.add("error");
    return;
  }
  const body = {
    graph: S.graphId,
    interventions: ivs,
    mode: document.getElementById("steer-mode").value,
    max_new_tokens: Number(document.getElementById("steerTokens").value) || 8,
    seed: Number(document.getElementById("steerSeed").value) || 0,
    top_k: Number(document.getElementById("steerTopk").value) || 5,
    supernodes: S.supernodes,
    watch: S.pinned,
  };
  try {
    const pair = JSON.parse(document.getElementById("steer-model").value || "null");
    if (pair) Object.assign(body, pair);
  } catch {
    /* no pair chosen: the server uses the one the graph was traced with */
  }
  btn.disabled = true;
  msg.textContent = "queued…";
  try {
    const { job } = await api.post("/api/jobs/intervene", body);
    const result = await waitJob(job, (j) => {
      const p = typeof j.progress === "number" ? j.progress : j.progress?.fraction;
      lastMsg = { text: "", error: false };
      (document.getElementById("steer-msg") || msg).textContent = j.state === "queued" ? `queued${j.position != null ? ` (position ${j.position})` : ""}…` : `${j.message || j.state}${p != null ? ` ${Math.round(100 * p)}%` : ""}`;
    });
    const run = { at: new Date().toISOString(), request: body, result, summary: runSummary(body, result) };
    shown = run;
    S.steerRuns = [...S.steerRuns, run]; // the server keeps the run with the graph (GET /api/graphs/{id}/runs)
    lastMsg = { text: "done", error: false };
    render();
    showResult(run);
  } catch (e) {
    lastMsg = { text: `Steer failed: ${e.message}`, error: true };
    const m = document.getElementById("steer-msg");
    m.textContent = lastMsg.text;
    m.classList.add("error");
  } finally {
    const b = document.getElementById("steer-run");
    if (b) b.disabled = false;
  }
}

function showResult(run, redraw = true) {
  shown = run;
  const box = document.getElementById("steer-result");
  if (!box) return;
  const r = run.result || {};
  const frag = document.createDocumentFragment();
  const t = el("table", "logit-table");
  const head = el("tr");
  head.append(el("th", "", "before"), el("th", "", ""), el("th", "", "after"), el("th", "", ""));
  t.append(head);
  const b = r.before?.top || [];
  const a = r.after?.top || [];
  for (let i = 0; i < Math.max(b.length, a.length); i++) {
    const tr = el("tr");
    for (const x of [b[i], a[i]]) {
      const tok = el("td", "", x ? JSON.stringify(x.token) : "");
      const p = el("td", "");
      if (x) {
        const bar = el("span", "bar");
        bar.style.width = `${Math.round(60 * x.prob)}px`;
        p.append(bar, ` ${x.prob.toFixed(3)}`);
      }
      tr.append(tok, p);
    }
    t.append(tr);
  }
  t.dataset.role = "steer-logits";
  frag.append(el("h5", "", "Top logits"), t);
  frag.append(el("h5", "", "Generation before"), el("div", "gen", r.generation_before ?? ""));
  const after = el("div", "gen", r.generation_after ?? "");
  after.dataset.role = "generation-after";
  frag.append(el("h5", "", "Generation after"), after);
  box.replaceChildren(frag);
  if (redraw) emit("steer-result", r);
}

export function runSummary(request, result) {
  const n = request?.interventions?.length ?? 0;
  const top0 = result?.after?.top?.[0];
  return `${n} intervention(s) → ${top0 ? JSON.stringify(top0.token) : "?"}`;
}

export function prompt() {
  return (S.meta?.tokens || []).map(tokenAt).join("");
}
