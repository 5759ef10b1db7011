// Fetch wrapper: JSON in and out; a failed request throws an Error carrying the server's one-sentence `detail`.

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

async function request(method, path, body, opts = {}) {
  const init = { method, headers: {} };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (opts.signal) init.signal = opts.signal;
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, `The server did not answer (${e.message}); is it still running?`);
  }
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    let detail = data && data.detail !== undefined ? data.detail : text || res.statusText;
    if (typeof detail !== "string") detail = JSON.stringify(detail);
    throw new ApiError(res.status, detail);
  }
  return data;
}

export const api = {
  get: (p, o) => request("GET", p, undefined, o),
  post: (p, b, o) => request("POST", p, b, o),
  put: (p, b, o) => request("PUT", p, b, o),
  patch: (p, b, o) => request("PATCH", p, b, o),
  del: (p, o) => request("DELETE", p, undefined, o),
};

export const enc = encodeURIComponent;

/** Wait for a server job to finish; onProgress(job) on every poll. Resolves with the job's result. */
export async function waitJob(job, onProgress, intervalMs = 250) {
  for (;;) {
    const j = await api.get(`/api/jobs/${enc(job)}`);
    if (onProgress) onProgress(j);
    if (j.state === "done") return j.result;
    if (j.state === "failed") throw new ApiError(500, j.error || "the job failed");
    if (j.state === "cancelled") throw new ApiError(499, "the job was cancelled");
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
