// The model / transcoder-set pairs this server can run (loaded, configured, or in the zoo), fetched once.

import { api } from "./api.js";

let pairs = null;

export async function modelPairs() {
  if (pairs) return pairs;
  const res = await api.get("/api/models");
  const out = [];
  const add = (model, transcoders) => {
    if (model && transcoders && !out.some((p) => p.model === model && p.transcoders === transcoders)) out.push({ model, transcoders });
  };
  for (const p of [...(res.loaded || []), ...(res.configured || [])]) add(p.model, p.transcoders);
  const zoo = res.zoo || {};
  for (const m of zoo.models || []) {
    const own = (zoo.transcoders || []).filter((t) => t.startsWith(`${m}-`));
    for (const t of own.length ? own : zoo.transcoders || []) add(m, t);
  }
  pairs = out;
  return out;
}

/** The pair a graph was traced with, if the server knows it, else a zoo pair whose model the graph names. */
export function guessPair(meta, list) {
  const sm = meta?.server_model;
  if (sm?.model && sm?.transcoders) return sm;
  const named = String(meta?.model || "");
  const hits = list.filter((p) => named === p.model || named.includes(`/${p.model}/`) || named.endsWith(`/${p.model}`));
  const kind = String(meta?.transcoder_kind || meta?.transcoders || "").toLowerCase();
  return hits.find((p) => kind && p.transcoders.toLowerCase().includes(kind)) || hits[0] || list[0] || null;
}
