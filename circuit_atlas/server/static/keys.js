// Keyboard map. Keys are ignored while typing in an input; the map is shown by `?`.

import { clearPins, setThreshold, togglePin, ungroup } from "./actions.js";
import { startEdit } from "./detail.js";
import { fit } from "./linkgraph.js";
import * as search from "./search.js";
import { S, emit, redo, select, undo } from "./state.js";
import { finishGrouping } from "./subgraph.js";

export const KEYMAP = [
  ["/", "search nodes by label, id, token or layer (L3); Enter jumps, Ctrl+Enter pins"],
  ["click", "select a node (again, or empty space: deselect)"],
  ["Ctrl/⌘ + click", "pin / unpin a node (in any panel)"],
  ["p", "pin / unpin the selected node"],
  ["hold g + click", "pick nodes or supernodes; release g to group them into a supernode"],
  ["u", "ungroup the selected supernode"],
  ["e", "edit the label of the selected node"],
  ["click a supernode's name", "rename it"],
  ["Esc", "clear the selection (and close dialogs)"],
  ["f", "fit the link graph"],
  ["[ / ]", "lower / raise the pruning threshold by 0.05"],
  ["Ctrl/⌘ + Z, Ctrl/⌘ + Shift + Z", "undo / redo"],
  ["Shift (held)", "freeze the hover while moving to another panel"],
  ["wheel / drag", "zoom / pan the link graph (Shift + wheel: scroll sideways)"],
  ["?", "this map"],
];

let gHeld = false;
export function groupHeld() {
  return gHeld;
}

function typing(e) {
  const t = e.target;
  return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
}

export function showHelp() {
  const t = document.getElementById("keymap");
  t.replaceChildren(
    ...KEYMAP.map(([k, d]) => {
      const tr = document.createElement("tr");
      const a = document.createElement("td");
      const kbd = document.createElement("kbd");
      kbd.textContent = k;
      a.append(kbd);
      const b = document.createElement("td");
      b.textContent = d;
      tr.append(a, b);
      return tr;
    }),
  );
  document.getElementById("help").hidden = false;
}

export function init() {
  window.addEventListener("keydown", (e) => {
    if (typing(e)) return;
    const mod = e.ctrlKey || e.metaKey;
    if (mod && e.key.toLowerCase() === "z") {
      e.preventDefault();
      if (e.shiftKey) redo();
      else undo();
      return;
    }
    if (mod && e.key.toLowerCase() === "y") {
      e.preventDefault();
      redo();
      return;
    }
    if (mod || e.altKey) return;
    const viewer = !document.getElementById("viewer").hidden;
    switch (e.key) {
      case "?":
        showHelp();
        break;
      case "Escape":
        for (const o of document.querySelectorAll(".overlay")) o.hidden = true;
        for (const p of document.querySelectorAll(".panel.fullscreen")) p.querySelector(".fs").click();
        if (S.grouping.size) {
          S.grouping.clear();
          emit("grouping");
        }
        if (S.selected) select(S.selected);
        break;
      default:
        if (!viewer) return;
        handleViewerKey(e);
    }
  });
  window.addEventListener("keyup", (e) => {
    if (e.key === "g" && gHeld) {
      gHeld = false;
      window.__groupHeld = false;
      if (S.grouping.size >= 2) finishGrouping();
      else {
        S.grouping.clear();
        emit("grouping");
      }
    }
  });
  window.addEventListener("blur", () => {
    gHeld = false;
    window.__groupHeld = false;
  });
}

function handleViewerKey(e) {
  switch (e.key) {
    case "/":
      e.preventDefault();
      search.open();
      break;
    case "g":
      if (!e.repeat) {
        gHeld = true;
        window.__groupHeld = true;
      }
      break;
    case "u":
      ungroup(S.selected);
      break;
    case "p":
      if (S.selected) togglePin(S.selected);
      break;
    case "e":
      e.preventDefault();
      startEdit();
      break;
    case "f":
      fit(true);
      break;
    case "[":
      setThreshold(S.nodeThreshold - 0.05);
      break;
    case "]":
      setThreshold(S.nodeThreshold + 0.05);
      break;
    case "X":
      if (e.shiftKey) clearPins();
      break;
  }
}
