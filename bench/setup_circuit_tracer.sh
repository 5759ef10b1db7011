#!/usr/bin/env bash
# Create bench/.venv-ct: a private venv holding circuit-tracer 0.5.0, the benchmark reference.
# It is never a dependency of circuit-atlas. Idempotent: does nothing if the venv already
# imports circuit_tracer at the pinned versions. About 1.5 minutes on a cold run.
#
# Pins (see shared/reference/circuit_tracer.md §12): torch 2.13.0 first (pip picks the CPU
# wheel from the local find-links), then circuit-tracer 0.5.0 with its lock-file pins
# nnsight 0.7.0 (0.8.x fails to import in 0.5.0), transformer-lens 3.2.1, transformers 4.57.3.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${CT_VENV:-$HERE/.venv-ct}"
PY_BASE="${PYTHON:-python3}"

TORCH_PIN="torch==2.13.0"
CT_PINS=("circuit-tracer==0.5.0" "nnsight==0.7.0" "transformer-lens==3.2.1" "transformers==4.57.3")

check() {
    [ -x "$VENV/bin/python" ] || return 1
    "$VENV/bin/python" - <<'EOF' 2>/dev/null
import importlib.metadata as md
want = {"torch": "2.13.0", "circuit-tracer": "0.5.0", "nnsight": "0.7.0",
        "transformer-lens": "3.2.1", "transformers": "4.57.3"}
for name, v in want.items():
    have = md.version(name)
    if not (have == v or have.startswith(v + "+")):
        raise SystemExit(f"{name} {have} != {v}")
import circuit_tracer  # noqa: F401
EOF
}

if check; then
    echo "[setup] $VENV already has circuit-tracer 0.5.0 with the pinned stack; nothing to do."
    exit 0
fi

echo "[setup] creating venv $VENV"
"$PY_BASE" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip wheel setuptools >/dev/null 2>&1 || true
echo "[setup] installing $TORCH_PIN (CPU wheel)"
"$VENV/bin/python" -m pip install --progress-bar off "$TORCH_PIN"
echo "[setup] installing ${CT_PINS[*]}"
"$VENV/bin/python" -m pip install --progress-bar off "${CT_PINS[@]}" "$TORCH_PIN"

if check; then
    echo "[setup] ok: $("$VENV/bin/python" -c 'import torch, transformers, circuit_tracer; print("torch", torch.__version__, "| transformers", transformers.__version__)')"
else
    echo "[setup] FAILED: the venv does not import circuit-tracer at the pinned versions" >&2
    exit 1
fi
