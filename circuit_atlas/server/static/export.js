// Export: link graph and subgraph as SVG or high-DPI PNG, and the graph as JSON with the current labels
// (the server writes them into `clerp` and the view into `qParams`).

import { enc } from "./api.js";
import { edgeColor, edgeWidth } from "./colors.js";
import { bandOf, geometry, overlayEdges, pngCanvas } from "./linkgraph.js";
import { S, isPinned, tokenAt, visibleToken } from "./state.js";
import { svgElement } from "./subgraph.js";

const SCALE = 3; // PNG pixels per CSS pixel: sharp in print and on high-DPI screens

export function init() {
  const menu = document.getElementById("export-menu");
  document.getElementById("export-open").addEventListener("click", (e) => {
    e.stopPropagation();
    menu.hidden = !menu.hidden;
  });
  document.addEventListener("click", () => (menu.hidden = true));
  for (const b of menu.querySelectorAll("button"))
    b.addEventListener("click", () => {
      menu.hidden = true;
      run(b.dataset.export);
    });
}

function slug() {
  return String(S.meta?.name || S.graphId || "graph").replace(/[^\w.-]+/g, "_");
}

function download(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 2000);
}

export async function run(what) {
  if (what === "lg-svg") download(new Blob([linkGraphSvg()], { type: "image/svg+xml" }), `${slug()}-linkgraph.svg`);
  else if (what === "lg-png") pngCanvas(SCALE).toBlob((b) => download(b, `${slug()}-linkgraph.png`), "image/png");
  else if (what === "sg-svg") download(new Blob([subgraphSvg()], { type: "image/svg+xml" }), `${slug()}-subgraph.svg`);
  else if (what === "sg-png") download(await svgToPng(subgraphSvg()), `${slug()}-subgraph.png`);
  else if (what === "json") {
    const a = document.createElement("a");
    a.href = `/api/graphs/${enc(S.graphId)}/export.json`;
    a.download = `${slug()}.json`;
    document.body.append(a);
    a.click();
    a.remove();
  }
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

/** The link graph as SVG, in the on-screen geometry: bands, tokens, nodes, and the drawn edges. */
export function linkGraphSvg() {
  const { L, W, H, r, sx, sy, LEFT } = geometry();
  const out = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="system-ui, 'Noto Sans CJK SC', sans-serif">`);
  out.push(`<rect width="${W}" height="${H}" fill="#fff"/>`);
  for (let b = 0; b < L.nBands; b++) {
    const y0 = sy(L.height - (b + 1) * L.bandH);
    const fill = b === 0 || b === L.nBands - 1 ? "#ececec" : b % 2 ? "#f7f7f7" : "#f3f3f3";
    out.push(`<rect x="${sx(0)}" y="${y0}" width="${L.width * geometry().T.k}" height="${L.bandH * geometry().T.k}" fill="${fill}"/>`);
    const name = b === 0 ? "Emb" : b === L.nBands - 1 ? "Lgt" : `L${b - 1}`;
    out.push(`<text x="${LEFT - 5}" y="${sy(L.height - (b + 0.5) * L.bandH) + 3}" font-size="10" text-anchor="end" fill="#555">${name}</text>`);
  }
  for (let p = 0; p < L.colRight.length; p++) {
    const x = sx(L.colRight[p]) - 4;
    const y = sy(L.height) + 12;
    out.push(`<text transform="translate(${x},${y}) rotate(-36)" font-size="11" text-anchor="end">${esc(visibleToken(tokenAt(p)))}</text>`);
  }
  const lk = S.links;
  for (const e of overlayEdges()) {
    const a = lk.src[e];
    const b = lk.tgt[e];
    out.push(`<line x1="${sx(L.x[a])}" y1="${sy(L.y[a])}" x2="${sx(L.x[b])}" y2="${sy(L.y[b])}" stroke="${edgeColor(lk.pct[e])}" stroke-width="${edgeWidth(lk.pct[e]).toFixed(2)}" stroke-linecap="round"/>`);
  }
  S.nodes.forEach((n, i) => {
    const x = sx(L.x[i]);
    const y = sy(L.y[i]);
    if (x < -10 || x > W + 10 || y < -10 || y > H + 10) return;
    const stroke = isPinned(n.id) ? `stroke="#222" stroke-width="2"` : `stroke="#666" stroke-width="0.8"`;
    const title = `<title>${esc(n.label || n.id)}</title>`;
    if (n.kind === "feature") out.push(`<circle cx="${x}" cy="${y}" r="${r}" fill="#d9d9d9" ${stroke}>${title}</circle>`);
    else if (n.kind === "error") out.push(`<polygon points="${x},${y - r * 1.2} ${x + r * 1.2},${y} ${x},${y + r * 1.2} ${x - r * 1.2},${y}" fill="#bdbdbd" fill-opacity="0.5" ${stroke}>${title}</polygon>`);
    else out.push(`<rect x="${x - r}" y="${y - r}" width="${2 * r}" height="${2 * r}" fill="#9e9e9e" ${stroke}>${title}</rect>`);
    if (n.kind === "logit") out.push(`<text x="${x}" y="${y - r - 3}" font-size="11" text-anchor="middle">${esc(n.logit_token ?? n.token ?? "")}</text>`);
    void bandOf;
  });
  out.push("</svg>");
  return out.join("\n");
}

export function subgraphSvg() {
  const svg = svgElement().cloneNode(true);
  const vb = svg.getAttribute("viewBox")?.split(" ").map(Number) || [0, 0, 600, 300];
  svg.setAttribute("xmlns", "http://www.w3.org/2000/svg");
  svg.setAttribute("width", vb[2]);
  svg.setAttribute("height", vb[3]);
  svg.removeAttribute("id");
  return new XMLSerializer().serializeToString(svg);
}

function svgToPng(text) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    const url = URL.createObjectURL(new Blob([text], { type: "image/svg+xml" }));
    img.onload = () => {
      const c = document.createElement("canvas");
      c.width = img.width * SCALE;
      c.height = img.height * SCALE;
      const ctx = c.getContext("2d");
      ctx.scale(SCALE, SCALE);
      ctx.drawImage(img, 0, 0);
      URL.revokeObjectURL(url);
      c.toBlob(resolve, "image/png");
    };
    img.onerror = () => reject(new Error("could not render the subgraph SVG"));
    img.src = url;
  });
}
