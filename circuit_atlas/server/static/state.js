// The page's one store: the graph being viewed, the user's working state (pins, groups, layout, notes,
// thresholds), selection and hover, with a tiny event bus, undo / redo and autosave to the server.
// The graph data itself is read-only once loaded; selections live beside it, never inside node objects.

import { api, enc } from "./api.js";

export const S = {
  graphId: null,
  meta: null,
  nodes: [], // view nodes as the server sent them
  byId: new Map(), // id -> node
  index: new Map(), // id -> position in nodes
  links: null, // {src: Int32Array, tgt: Int32Array, weight: Float32Array, pct: Float32Array, n}
  csr: null, // {inStart, inList, outStart, outList} over link indices, built after first paint
  hidden: 0,
  nTotal: 0,
  selected: null,
  hovered: null,
  pinned: [],
  supernodes: [], // [[label, id, id, ...], ...]
  positions: {}, // subgraph card id -> [x, y] on a 0..1000 scale
  notes: {},
  steerRuns: [], // finished interventions on this graph, oldest first (the server keeps them: GET .../runs)
  nodeThreshold: 0.8,
  edgeThreshold: 0.98,
  version: null,
  labels: {}, // node id -> {text, scope, auto_label, version}
  readOnly: false, // showing an immutable shared view
  viewCode: null,
  grouping: new Set(), // ids picked while `g` is held / grouping mode is on
};

const handlers = new Map();
export function on(name, fn) {
  if (!handlers.has(name)) handlers.set(name, []);
  handlers.get(name).push(fn);
}
export function emit(name, data) {
  for (const fn of handlers.get(name) || []) {
    try {
      fn(data);
    } catch (e) {
      console.error(`handler for ${name} failed`, e);
    }
  }
}

// ---- node helpers ---------------------------------------------------------------------------
export const GLYPH = { feature: "●", error: "◆", embedding: "■", logit: "■" };
export function glyph(n) {
  return GLYPH[n?.kind] || "●";
}
export function nodeLabel(n) {
  if (!n) return "";
  const g = groupOf(n.id);
  const own = n.label || n.auto_label || shortId(n);
  return g >= 0 ? `[${S.supernodes[g][0]}] ${own}` : own;
}
export function shortId(n) {
  if (n.kind === "feature") return `L${n.layer}/#${n.feature ?? String(n.id).split(":")[3]}`;
  if (n.kind === "error") return `error L${n.layer}`;
  if (n.kind === "embedding") return `emb ${JSON.stringify(n.token ?? "")}`;
  if (n.kind === "logit") return `logit ${JSON.stringify(n.logit_token ?? n.token ?? "")}`;
  return n.id;
}
export function layerName(n) {
  if (n.kind === "embedding") return "Emb";
  if (n.kind === "logit") return "Lgt";
  return `L${n.layer}`;
}
export function tokenAt(pos) {
  const t = S.meta?.tokens?.[pos];
  return t === undefined ? "?" : t;
}
/** A token as drawn under its column: newlines as ↵, tabs as ⇥, an all-space token as ␣ so it is not invisible. */
export function visibleToken(t) {
  let s = String(t).replace(/\n/g, "↵").replace(/\t/g, "⇥");
  if (!s.trim()) s = s.replace(/ /g, "␣") || "∅";
  return s;
}
export function groupOf(id) {
  for (let i = 0; i < S.supernodes.length; i++) if (S.supernodes[i].indexOf(id, 1) >= 1) return i;
  return -1;
}
export function supernodeId(i) {
  return `sn:${i}`;
}
export function isPinned(id) {
  return S.pinned.includes(id);
}

// ---- selection / hover ----------------------------------------------------------------------
export function setHover(id) {
  if (S.hovered === id) return;
  S.hovered = id;
  emit("hover", id);
}
export function select(id) {
  S.selected = S.selected === id ? null : id;
  emit("select", S.selected);
}
export function selectOnly(id) {
  S.selected = id;
  emit("select", id);
}

// ---- working state, undo / redo -------------------------------------------------------------
const undoStack = [];
const redoStack = [];

function snapshot() {
  return JSON.stringify({
    pinned: S.pinned,
    supernodes: S.supernodes,
    positions: S.positions,
    notes: S.notes,
    node_threshold: S.nodeThreshold,
    edge_threshold: S.edgeThreshold,
  });
}
function restore(snap) {
  const s = JSON.parse(snap);
  S.pinned = s.pinned;
  S.supernodes = s.supernodes;
  S.positions = s.positions;
  S.notes = s.notes;
  const thresholdChanged = s.node_threshold !== S.nodeThreshold || s.edge_threshold !== S.edgeThreshold;
  S.nodeThreshold = s.node_threshold;
  S.edgeThreshold = s.edge_threshold;
  emit("pins");
  if (thresholdChanged) emit("threshold");
}

/** Change the working state in fn(); recorded for undo and autosaved. */
export function mutate(fn, { record = true, coalesce = null } = {}) {
  const before = snapshot();
  fn();
  const after = snapshot();
  if (before === after) return;
  if (record) {
    // A run of edits of one kind (dragging the pruning slider) is one undo step.
    const last = undoStack[undoStack.length - 1];
    if (coalesce && last && last.coalesce === coalesce && redoStack.length === 0) last.after = after;
    else undoStack.push({ kind: "state", before, after, coalesce });
    redoStack.length = 0;
  }
  emit("pins");
  scheduleSave();
  emit("history");
}

export function pushLabelHistory(node, before, after) {
  undoStack.push({ kind: "label", node, before, after });
  redoStack.length = 0;
  emit("history");
}

export async function undo() {
  const op = undoStack.pop();
  if (!op) return;
  redoStack.push(op);
  await apply(op, "before");
  emit("history");
}
export async function redo() {
  const op = redoStack.pop();
  if (!op) return;
  undoStack.push(op);
  await apply(op, "after");
  emit("history");
}
export function canUndo() {
  return undoStack.length > 0;
}
export function canRedo() {
  return redoStack.length > 0;
}
async function apply(op, which) {
  if (op.kind === "state") {
    restore(op[which]);
    scheduleSave();
  } else {
    // A label op stores {text, scope} on each side, or null for "the automatic label".
    const v = op[which];
    const other = op[which === "before" ? "after" : "before"];
    if (v) await writeLabel(op.node, v.text, v.scope, false);
    else if (other) await revertLabel(op.node, other.scope, false);
  }
}

// ---- autosave -------------------------------------------------------------------------------
let saveTimer = null;
let saving = Promise.resolve();
export function scheduleSave() {
  if (S.readOnly || !S.graphId) return;
  clearTimeout(saveTimer);
  setStatus("unsaved");
  saveTimer = setTimeout(() => {
    saving = saving.then(saveNow);
  }, 300);
}
export function flushSave() {
  if (saveTimer) {
    clearTimeout(saveTimer);
    saveTimer = null;
    saving = saving.then(saveNow);
  }
  return saving;
}
function statePayload() {
  return {
    pinned: S.pinned,
    supernodes: S.supernodes,
    positions: S.positions,
    notes: S.notes,
    node_threshold: S.nodeThreshold,
    edge_threshold: S.edgeThreshold,
  };
}
async function saveNow() {
  saveTimer = null;
  if (S.readOnly || !S.graphId) return;
  setStatus("saving…");
  const gid = S.graphId;
  try {
    let res;
    try {
      res = await api.put(`/api/graphs/${enc(gid)}/state`, { ...statePayload(), base_version: S.version });
    } catch (e) {
      if (e.status !== 409) throw e;
      // Someone else (another tab) saved first: this tab's edit is the newer one, so re-base onto theirs.
      const cur = await api.get(`/api/graphs/${enc(gid)}/state`);
      res = await api.put(`/api/graphs/${enc(gid)}/state`, { ...statePayload(), base_version: cur.version });
    }
    if (gid === S.graphId && res) S.version = res.version;
    setStatus("saved");
  } catch (e) {
    setStatus(`save failed: ${e.message}`, true);
  }
}
export function setStatus(text, error = false) {
  emit("status", { text, error });
}

export function applyServerState(st) {
  S.pinned = st.pinned || [];
  S.supernodes = st.supernodes || [];
  S.positions = st.positions || {};
  S.notes = { ...(st.notes || {}) };
  if (typeof st.node_threshold === "number") S.nodeThreshold = st.node_threshold;
  if (typeof st.edge_threshold === "number") S.edgeThreshold = st.edge_threshold;
  S.version = st.version ?? null;
}

// ---- labels ---------------------------------------------------------------------------------
function applyLabelLocally(id, text, scope) {
  const n = S.byId.get(id);
  const auto = n?.auto_label ?? S.labels[id]?.auto_label ?? "";
  if (text === null) {
    delete S.labels[id];
    if (n) {
      n.label = auto;
      n.label_scope = "auto";
    }
  } else {
    S.labels[id] = { ...(S.labels[id] || {}), text, scope, auto_label: auto };
    if (n) {
      n.label = text;
      n.label_scope = scope;
    }
  }
  emit("labels", id);
}

export async function writeLabel(id, text, scope, record = true) {
  const n = S.byId.get(id);
  const before = n && n.label_scope && n.label_scope !== "auto" ? { text: n.label, scope: n.label_scope } : null;
  if (S.readOnly) {
    applyLabelLocally(id, text, scope);
    return;
  }
  const res = await api.put(`/api/graphs/${enc(S.graphId)}/labels/${enc(id)}`, { text, scope });
  applyLabelLocally(id, text, scope);
  if (res && S.labels[id]) S.labels[id].version = res.version;
  if (record) pushLabelHistory(id, before, { text, scope });
  setStatus("saved");
}

export async function revertLabel(id, scope, record = true) {
  const n = S.byId.get(id);
  const before = n && n.label_scope && n.label_scope !== "auto" ? { text: n.label, scope: n.label_scope } : null;
  if (!S.readOnly) await api.del(`/api/graphs/${enc(S.graphId)}/labels/${enc(id)}?scope=${enc(scope)}`);
  applyLabelLocally(id, null, null);
  if (record) pushLabelHistory(id, before, null);
  setStatus("saved");
}
export { applyLabelLocally };
