// Edge colours: a colour-blind-safe diverging palette (blue = positive, vermilion-red = negative; RdBu-like,
// distinguishable under deuteranopia and protanopia), read on the share of the target's input (pct),
// clamped to ±0.4, with a floor so that no edge is white. Signs are also drawn as +/− marks.

const POS = [
  [198, 219, 239],
  [33, 102, 172],
  [5, 48, 97],
];
const NEG = [
  [253, 208, 162],
  [214, 96, 77],
  [103, 0, 31],
];

function mix(stops, t) {
  const x = t * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const a = stops[i];
  const b = stops[i + 1];
  return [0, 1, 2].map((k) => Math.round(a[k] + (b[k] - a[k]) * f));
}

export function edgeColor(pct, alpha = 1) {
  const t = Math.min(1, Math.abs(pct) / 0.4);
  const c = mix(pct >= 0 ? POS : NEG, 0.15 + 0.85 * t);
  return alpha === 1 ? `rgb(${c[0]},${c[1]},${c[2]})` : `rgba(${c[0]},${c[1]},${c[2]},${alpha})`;
}

/** Row background in lists: the same hue, faint. */
export function edgeTint(pct) {
  return edgeColor(pct, 0.12 + 0.35 * Math.min(1, Math.abs(pct) / 0.4));
}

export function edgeWidth(pct) {
  return 0.5 + 3 * Math.sqrt(Math.min(1, Math.abs(pct)));
}

export function signMark(w) {
  return w >= 0 ? "+" : "−";
}
