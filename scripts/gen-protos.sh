#!/usr/bin/env bash
# Regenerate Python code for our own .proto files under api/.
# Usage: scripts/gen-protos.sh [OUT_DIR]   (default: the repository root, i.e. in place)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.}
py=${PYTHON:-.venv/bin/python}
include=$("$py" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
mapfile -t protos < <(find api -name '*.proto' | sort)
"$py" -m grpc_tools.protoc -I . -I "$include" --python_out="$out" --grpc_python_out="$out" "${protos[@]}"
