// The graph library: list and search graphs, open, delete, upload a JSON / .safetensors file, and trace a
// new prompt on a loaded model with a live tokenisation preview and progress while the job runs.

import { api, enc, waitJob } from "./api.js";
import { modelPairs } from "./models.js";

const $ = (id) => document.getElementById(id);
let opener = null;
let models = null;
let listSeq = 0;

export function init({ openGraph }) {
  opener = openGraph;
  let t = null;
  for (const id of ["lib-q", "lib-model", "lib-transcoders"])
    $(id).addEventListener("input", () => {
      clearTimeout(t);
      t = setTimeout(refresh, 150);
    });
  $("upload-form").addEventListener("submit", upload);
  $("trace-form").addEventListener("submit", trace);
  let tt = null;
  $("trace-prompt").addEventListener("input", () => {
    clearTimeout(tt);
    tt = setTimeout(tokenize, 200);
  });
  $("trace-model").addEventListener("change", () => {
    fillTranscoders();
    tokenize();
  });
}

export function show() {
  refresh();
  loadModels();
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text ?? "";
  if (cls) td.className = cls;
  return td;
}

async function refresh() {
  const mine = ++listSeq;
  const q = new URLSearchParams();
  if ($("lib-q").value) q.set("q", $("lib-q").value);
  if ($("lib-model").value) q.set("model", $("lib-model").value);
  if ($("lib-transcoders").value) q.set("transcoders", $("lib-transcoders").value);
  let list;
  try {
    list = await api.get(`/api/graphs?${q}`);
  } catch (e) {
    $("lib-empty").hidden = false;
    $("lib-empty").textContent = `Could not list graphs: ${e.message}`;
    return;
  }
  if (mine !== listSeq) return;
  fillFilter("lib-model", list.map((g) => g.model));
  fillFilter("lib-transcoders", list.map((g) => g.transcoders), new Map(list.map((g) => [g.transcoders, g.transcoder_name])));
  const tbody = $("lib-table").querySelector("tbody");
  tbody.replaceChildren();
  for (const g of list) {
    const tr = document.createElement("tr");
    tr.dataset.id = g.id;
    if (g.state === "missing") tr.className = "missing";
    const nameTd = document.createElement("td");
    const a = document.createElement("a");
    a.href = `/graphs/${enc(g.id)}`;
    a.textContent = g.name || g.id;
    a.addEventListener("click", (e) => {
      e.preventDefault();
      if (g.state !== "missing") opener(g.id);
    });
    nameTd.append(a);
    if (g.tags?.length) nameTd.append(" ", ...g.tags.map((t) => Object.assign(document.createElement("span"), { className: "chip", textContent: t })));
    const del = document.createElement("button");
    del.textContent = "Delete";
    del.addEventListener("click", async () => {
      if (!confirm(`Delete graph ${g.name || g.id}? Its labels and views go with it.`)) return;
      try {
        await api.del(`/api/graphs/${enc(g.id)}`);
        refresh();
      } catch (e) {
        alert(e.message);
      }
    });
    const actions = document.createElement("td");
    actions.append(del);
    tr.append(
      nameTd,
      cell(g.state === "missing" ? "(file missing)" : g.prompt, "prompt"),
      cell(g.model),
      Object.assign(cell(g.transcoder_name || g.transcoders), { title: `transcoder set id ${g.transcoders}` }),
      cell(g.n_nodes),
      cell(g.n_links),
      cell(when(g.created)),
      actions,
    );
    tbody.append(tr);
  }
  $("lib-empty").hidden = list.length > 0;
  $("lib-empty").textContent = "No graphs yet: upload a file or trace a prompt.";
}

function when(t) {
  if (t == null) return "";
  const d = typeof t === "number" ? new Date(t * 1000) : new Date(t);
  return Number.isNaN(d.getTime()) ? String(t) : d.toISOString().replace("T", " ").slice(0, 16);
}

function fillFilter(id, values, names = new Map()) {
  const sel = $(id);
  const cur = sel.value;
  const have = new Set([...sel.options].map((o) => o.value));
  for (const v of [...new Set(values.filter(Boolean))].sort())
    if (!have.has(v)) {
      const o = document.createElement("option");
      o.value = v;
      o.textContent = names.get(v) && names.get(v) !== v ? `${names.get(v)} (${v})` : v;
      sel.append(o);
    }
  sel.value = cur;
}

async function upload(e) {
  e.preventDefault();
  const msg = $("upload-msg");
  const file = $("upload-file").files[0];
  msg.className = "msg";
  if (!file) {
    msg.textContent = "Choose a .json or .safetensors graph file first.";
    msg.classList.add("error");
    return;
  }
  const fd = new FormData();
  fd.append("file", file, file.name);
  if ($("upload-name").value.trim()) fd.append("name", $("upload-name").value.trim());
  msg.textContent = `Uploading ${file.name}…`;
  try {
    const res = await api.post("/api/graphs", fd);
    msg.textContent = `Imported ${file.name}: ${res.n_nodes} nodes, ${res.n_links} links.`;
    msg.classList.add("ok");
    $("upload-file").value = "";
    await refresh();
    opener(res.id);
  } catch (err) {
    msg.textContent = `Upload failed: ${err.message}`;
    msg.classList.add("error");
  }
}

async function loadModels() {
  if (models) return;
  const sel = $("trace-model");
  try {
    models = await modelPairs();
  } catch (e) {
    models = [];
    $("trace-msg").textContent = `Tracing is not available on this server: ${e.message}`;
  }
  sel.replaceChildren();
  for (const m of [...new Set(models.map((p) => p.model))]) {
    const o = document.createElement("option");
    o.value = m;
    o.textContent = m;
    sel.append(o);
  }
  fillTranscoders();
}

function fillTranscoders() {
  const sel = $("trace-transcoders");
  sel.replaceChildren();
  for (const p of (models || []).filter((x) => x.model === $("trace-model").value)) {
    const o = document.createElement("option");
    o.value = p.transcoders;
    o.textContent = p.transcoders;
    sel.append(o);
  }
}

let tokSeq = 0;
async function tokenize() {
  const mine = ++tokSeq;
  const text = $("trace-prompt").value;
  const box = $("trace-tokens");
  if (!text || !$("trace-model").value) return box.replaceChildren();
  try {
    const res = await api.post("/api/tokenize", { model: $("trace-model").value, transcoders: $("trace-transcoders").value, text });
    if (mine !== tokSeq) return;
    box.replaceChildren(
      ...(res.tokens || []).map((t) => Object.assign(document.createElement("span"), { className: "chip", textContent: typeof t === "string" ? t : t.text ?? t.token })),
      Object.assign(document.createElement("span"), { className: "muted small", textContent: ` ${res.tokens?.length ?? 0} tokens` }),
    );
  } catch (e) {
    if (mine === tokSeq) box.replaceChildren(Object.assign(document.createElement("span"), { className: "error small", textContent: e.message }));
  }
}

async function trace(e) {
  e.preventDefault();
  const msg = $("trace-msg");
  const prog = $("trace-progress");
  msg.className = "msg";
  const body = { model: $("trace-model").value, transcoders: $("trace-transcoders").value, prompt: $("trace-prompt").value };
  for (const k of ["max_n_logits", "desired_logit_prob", "max_feature_nodes", "batch_size"]) {
    const v = $(`opt-${k}`).value;
    if (v !== "") body[k] = Number(v);
  }
  if (!body.prompt.trim()) {
    msg.textContent = "Type a prompt to trace.";
    msg.classList.add("error");
    return;
  }
  try {
    const { job } = await api.post("/api/jobs/trace", body);
    prog.hidden = false;
    prog.value = 0;
    msg.textContent = "queued…";
    const result = await waitJob(job, (j) => {
      const p = typeof j.progress === "number" ? j.progress : j.progress?.fraction ?? (j.progress?.total ? j.progress.done / j.progress.total : 0);
      prog.value = p || 0;
      msg.textContent =
        j.state === "queued" ? `queued${j.position != null ? ` (position ${j.position})` : ""}…` : `${j.message || j.state} ${Math.round(100 * (p || 0))}%`;
    });
    prog.value = 1;
    msg.textContent = "done";
    msg.classList.add("ok");
    const id = result?.graph || result?.id;
    if (id) opener(id);
    else refresh();
  } catch (err) {
    msg.textContent = `Trace failed: ${err.message}`;
    msg.classList.add("error");
  } finally {
    prog.hidden = true;
  }
}
