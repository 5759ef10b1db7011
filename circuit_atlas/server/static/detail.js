// Feature detail: the hovered node, else the selected one. Label (with its scope and the automatic label
// underneath; edit / revert), activation, and the feature's dashboard from the server when one is built.

import { api, enc } from "./api.js";
import { S, layerName, mutate, nodeLabel, on, revertLabel, shortId, tokenAt, writeLabel } from "./state.js";

let bodyEl;
let editing = null; // node id whose label is being edited: hover does not move the panel meanwhile
const cache = new Map(); // dashboard key -> {data} | {error}
let timer = null;
let shownId = null;
let noteFocus = null; // id shown while its note is being typed

export function init() {
  bodyEl = document.getElementById("detail-body");
  on("hover", () => schedule());
  on("select", () => schedule(true));
  on("labels", () => render(true));
  on("view", () => render(true));
}

function target() {
  if (editing) return editing;
  if (noteFocus) return noteFocus;
  return S.hovered || S.selected;
}

function schedule(now = false) {
  clearTimeout(timer);
  if (now) render();
  else timer = setTimeout(render, 0);
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function render(force = false) {
  const id = target();
  if (!force && id === shownId) return;
  shownId = id;
  if (!id) {
    bodyEl.replaceChildren(el("p", "muted hint", "Hover or click a node."));
    return;
  }
  if (id.startsWith("sn:")) return renderSupernode(Number(id.slice(3)));
  const n = S.byId.get(id);
  if (!n) {
    bodyEl.replaceChildren(el("p", "muted hint", `${id} is hidden by the pruning filter.`));
    return;
  }
  const frag = document.createDocumentFragment();
  const title =
    n.kind === "feature"
      ? `Feature L${n.layer}/${n.feature}`
      : n.kind === "error"
        ? `MLP error L${n.layer}`
        : n.kind === "embedding"
          ? "Embedding"
          : "Logit";
  const head = el("div", "det-title", title);
  const sub = el(
    "div",
    "det-sub",
    `${layerName(n)} · position ${n.position} ${JSON.stringify(tokenAt(n.position))}` +
      (n.activation != null ? ` · act ${Number(n.activation).toFixed(3)}` : "") +
      (n.influence != null ? ` · influence ${Number(n.influence).toFixed(4)}` : "") +
      (n.cumulative != null ? ` · cumulative ${Number(n.cumulative).toFixed(3)}` : ""),
  );
  frag.append(head, sub, labelBox(n), notesBox(n.id));
  if (n.kind === "error") {
    const share = n.error_share ?? n.error_fraction;
    frag.append(
      el(
        "p",
        "",
        share != null
          ? `Share of the MLP output left unexplained by the transcoder: ${(100 * share).toFixed(1)}%`
          : "The part of this MLP's output at this position that the transcoder does not reconstruct.",
      ),
    );
  }
  if (n.kind === "logit") {
    frag.append(el("p", "", `Probability ${n.probability != null ? Number(n.probability).toFixed(4) : "?"} for ${JSON.stringify(n.logit_token ?? n.token ?? "")}`));
    const eff = el("div", "");
    frag.append(el("h5", "", "Embedding effects (direct, from the prompt tokens)"), eff);
    embeddingEffects(n, eff);
  }
  if (n.kind === "feature") {
    const dash = el("div", "dash");
    frag.append(dash);
    dashboard(n, dash);
  }
  bodyEl.replaceChildren(frag);
}

function labelBox(n) {
  const box = el("div", "label-box");
  if (editing === n.id) {
    const input = el("input");
    input.value = n.label || "";
    input.style.width = "100%";
    const scope = el("select");
    for (const [v, t] of [
      ["feature", "this feature, in every graph of the transcoder set"],
      ["graph", "this feature, in this graph"],
      ["node", "this node only (this position)"],
    ]) {
      const o = el("option", "", t);
      o.value = v;
      scope.append(o);
    }
    scope.value = n.label_scope && n.label_scope !== "auto" ? n.label_scope : n.kind === "feature" ? "feature" : "node";
    const save = el("button", "primary", "Save");
    const cancel = el("button", "", "Cancel");
    const msg = el("div", "msg");
    const done = async (ok) => {
      if (ok) {
        try {
          await writeLabel(n.id, input.value.trim(), scope.value);
        } catch (e) {
          msg.textContent = e.message;
          msg.classList.add("error");
          return;
        }
      }
      editing = null;
      render(true);
    };
    save.addEventListener("click", () => done(true));
    cancel.addEventListener("click", () => done(false));
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") done(true);
      if (e.key === "Escape") done(false);
      e.stopPropagation();
    });
    box.append(input, el("div", "auto", `automatic: ${n.auto_label || shortId(n)}`), scope, save, cancel, msg);
    setTimeout(() => input.focus(), 0);
    return box;
  }
  const text = el("span", "label-text", nodeLabel(n));
  const scope = el("span", "scope", n.label_scope && n.label_scope !== "auto" ? `${n.label_scope} label` : "automatic");
  const edit = el("button", "", "Edit label");
  edit.dataset.action = "edit-label";
  edit.addEventListener("click", () => startEdit(n.id));
  box.append(text, scope, " ", edit);
  if (n.label_scope && n.label_scope !== "auto") {
    const rev = el("button", "", "Revert");
    rev.title = "Back to the automatic label";
    rev.addEventListener("click", async () => {
      try {
        await revertLabel(n.id, n.label_scope);
      } catch (e) {
        box.append(el("div", "msg error", e.message));
      }
    });
    box.append(" ", rev);
    box.append(el("div", "auto", `automatic: ${n.auto_label || shortId(n)}`));
  }
  return box;
}

export function startEdit(id) {
  const nid = id || S.selected || S.hovered;
  if (!nid || !S.byId.has(nid)) return;
  editing = nid;
  render(true);
}
export function isEditing() {
  return editing !== null;
}

function renderSupernode(i) {
  const g = S.supernodes[i];
  if (!g) return bodyEl.replaceChildren(el("p", "muted hint", "No such supernode."));
  const frag = document.createDocumentFragment();
  frag.append(el("div", "det-title", `Supernode “${g[0]}”`), el("div", "det-sub", `${g.length - 1} members`));
  const ul = el("ul");
  for (const m of g.slice(1)) {
    const n = S.byId.get(m);
    ul.append(el("li", "", n ? `${n.label || shortId(n)} — ${layerName(n)} · ${n.position}` : m));
  }
  frag.append(ul, notesBox(`sn:${g.slice(1).join(",")}`));
  bodyEl.replaceChildren(frag);
}

/** A free-text note on a node or supernode, autosaved with the working state (undoable). */
function notesBox(key) {
  const ta = el("textarea");
  ta.rows = 2;
  ta.placeholder = "note (autosaved)";
  ta.style.width = "100%";
  ta.dataset.role = "note";
  ta.value = S.notes[key] || "";
  let t = null;
  const save = () => {
    const v = ta.value.trim();
    if ((S.notes[key] || "") === v) return;
    mutate(() => {
      const notes = { ...S.notes };
      if (v) notes[key] = v.slice(0, 10000);
      else delete notes[key];
      S.notes = notes;
    });
  };
  ta.addEventListener("input", () => {
    clearTimeout(t);
    t = setTimeout(save, 400);
  });
  ta.addEventListener("blur", save);
  // While typing a note, hovering elsewhere does not swap the panel away.
  ta.addEventListener("focus", () => (noteFocus = shownId));
  ta.addEventListener("blur", () => (noteFocus = null));
  ta.addEventListener("keydown", (e) => e.stopPropagation());
  return ta;
}

async function embeddingEffects(n, box) {
  try {
    const res = await api.get(`/api/graphs/${enc(S.graphId)}/nodes/${enc(n.id)}/edges?direction=in&k=200`);
    const emb = (res.edges || []).filter((e) => e.kind === "embedding");
    if (!emb.length) return box.append(el("p", "muted", "No direct edges from token embeddings."));
    const t = el("table", "logit-table");
    for (const e of emb.slice(0, 12)) {
      const tr = el("tr");
      tr.append(el("td", "", `${e.position} ${JSON.stringify(e.token ?? tokenAt(e.position))}`), el("td", e.weight >= 0 ? "pos" : "neg", (e.weight >= 0 ? "+" : "") + e.weight.toFixed(3)));
      t.append(tr);
    }
    box.append(t);
  } catch (e) {
    box.append(el("p", "muted", e.message));
  }
}

// ---- dashboards -----------------------------------------------------------------------------
async function dashboard(n, box) {
  const ts = S.meta?.dashboards;
  if (!ts) {
    const p = el("p", "muted", "no dashboard built for this transcoder set (circuit-atlas features build)");
    p.dataset.dashboard = "missing";
    box.append(p);
    return;
  }
  const key = `${ts}/${n.layer}/${n.feature}`;
  if (!cache.has(key)) {
    box.append(el("p", "muted", "loading dashboard…"));
    try {
      cache.set(key, { data: await api.get(`/api/features/${enc(ts)}/${n.layer}/${n.feature}`) });
    } catch (e) {
      cache.set(key, { error: e.status === 404 ? "no dashboard built for this transcoder set" : e.message, status: e.status });
    }
    if (target() !== n.id) return;
    box.replaceChildren();
  }
  const c = cache.get(key);
  if (c.error) {
    const p = el("p", "muted", c.error.toLowerCase().includes("dashboard") ? c.error : `No dashboard: ${c.error}`);
    p.dataset.dashboard = "missing";
    box.append(p);
    return;
  }
  drawDashboard(c.data, n, box);
}

// circuit-tracer's feature JSON keeps token strings and their values in parallel lists
function withValues(list, values) {
  if (!list || !values || list.length !== values.length) return list;
  return list.map((t, i) => (typeof t === "string" ? { token: t, value: values[i] } : t));
}

function tokensOf(list) {
  return (list || []).map((t) => (typeof t === "string" ? { token: t } : { token: t.token ?? t[0], value: t.value ?? t.logit ?? t[1] }));
}

function drawDashboard(d, n, box) {
  box.dataset.dashboard = "shown";
  const desc = d.description || d.explanation || d.label;
  if (desc) box.append(el("p", "", desc));
  if (d.activation_frequency != null) {
    box.append(el("p", "muted", `active on ${(100 * d.activation_frequency).toFixed(3)} % of ${d.n_tokens ?? "?"} tokens · max ${Number(d.act_max ?? 0).toFixed(3)}`));
  }
  const hist = d.histogram_edges ? { counts: d.histogram, edges: d.histogram_edges } : d.histogram || d.activation_histogram;
  if (hist) box.append(el("h5", "", "Activation histogram"), histogram(hist, d, n.activation));
  for (const [title, list] of [
    ["Top promoted tokens", withValues(d.top_logits || d.top_tokens || d.promoted, d.top_logits_values)],
    ["Bottom (suppressed) tokens", withValues(d.bottom_logits || d.bottom_tokens || d.suppressed, d.bottom_logits_values)],
    ["Excited most by (embedding)", d.top_inputs],
  ]) {
    if (!list || !list.length) continue;
    const tl = el("div", "toklist");
    for (const t of tokensOf(list)) tl.append(el("span", "chip", t.value != null ? `${t.token} ${Number(t.value).toFixed(2)}` : t.token));
    box.append(el("h5", "", title), tl);
  }
  let groups = d.examples_quantiles;
  if (!groups) {
    const ex = d.top_examples || d.examples || d.top_activations;
    groups = ex ? [{ quantile_name: "Top activations", examples: ex }] : [];
  }
  const max = d.act_max || d.max_activation || Math.max(1e-6, ...groups.flatMap((g) => g.examples.flatMap((e) => e.tokens_acts_list || e.acts || e.activations || [0])));
  for (const g of groups) {
    box.append(el("h5", "", g.quantile_name || g.name || "Examples"));
    for (const ex of (g.examples || []).slice(0, 12)) box.append(example(ex, max));
  }
}

function example(ex, max) {
  const row = el("div", "ex");
  const toks = ex.tokens || [];
  const acts = ex.tokens_acts_list || ex.acts || ex.activations || [];
  const tgt = ex.train_token_ind ?? ex.target ?? -1;
  toks.forEach((t, i) => {
    const s = el("span", i === tgt ? "target" : "", String(t).replace(/\n/g, "↵"));
    const a = Math.max(0, Math.min(1, (acts[i] || 0) / max));
    if (a > 0) s.style.background = `rgba(230, 120, 0, ${0.08 + 0.7 * a})`;
    s.title = `act ${Number(acts[i] || 0).toFixed(3)}`;
    row.append(s);
  });
  if (ex.is_repeated_datapoint) row.style.opacity = 0.5;
  return row;
}

function histogram(h, d, act) {
  // Accepts [counts] with act_min / act_max, or {counts, edges} / {counts, bin_edges}.
  const counts = Array.isArray(h) ? h : h.counts || h.values || [];
  const edges = Array.isArray(h) ? null : h.edges || h.bin_edges;
  const lo = edges ? edges[0] : (d.act_min ?? 0);
  const hi = edges ? edges[edges.length - 1] : (d.act_max ?? 1);
  const w = 240;
  const hgt = 70;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", w);
  svg.setAttribute("height", hgt + 14);
  const m = Math.max(1, ...counts);
  const bw = w / Math.max(1, counts.length);
  counts.forEach((c, i) => {
    const r = document.createElementNS(ns, "rect");
    const bh = (hgt * c) / m;
    r.setAttribute("x", i * bw);
    r.setAttribute("y", hgt - bh);
    r.setAttribute("width", Math.max(1, bw - 1));
    r.setAttribute("height", bh);
    r.setAttribute("fill", "#8da0cb");
    svg.append(r);
  });
  if (act != null && hi > lo) {
    // bins may be log-spaced: place the marker by its bin, then linearly inside it
    let x = ((act - lo) / (hi - lo)) * w;
    if (edges && edges.length === counts.length + 1) {
      const i = edges.findIndex((e, j) => j < counts.length && act >= e && act < edges[j + 1]);
      if (i >= 0) x = (i + (act - edges[i]) / (edges[i + 1] - edges[i])) * bw;
      else x = act < lo ? 0 : w;
    }
    x = Math.max(0, Math.min(w, x));
    const l = document.createElementNS(ns, "line");
    for (const [k, v] of Object.entries({ x1: x, x2: x, y1: 0, y2: hgt, stroke: "#c51b7d", "stroke-dasharray": "3 2", "stroke-width": 2 })) l.setAttribute(k, v);
    svg.append(l);
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", Math.min(w - 60, x + 3));
    t.setAttribute("y", hgt + 12);
    t.setAttribute("font-size", "10");
    t.textContent = `this node ${Number(act).toFixed(2)}`;
    svg.append(t);
  }
  return svg;
}
