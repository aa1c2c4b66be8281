#!/usr/bin/env bash
# Idempotent set-up for `make setup`: Debian packages, then .venv with the project installed (editable).
# A second run only checks what is there and takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the mesh and its tests use. Each is installed only when missing.
DEB_PACKAGES=(redis-server iptables iproute2 chromium openssl procps)
# `make bench` also needs the load generators and the proxies we compare against.
[ "${ISTHMUS_BENCH:-}" = 1 ] && DEB_PACKAGES+=(wrk nghttp2-client nginx haproxy)
missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
    echo "setup: missing Debian packages: ${missing[*]} (run as root or install them yourself)" >&2
    exit 1
  fi
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The virtualenv. Re-installed only when pyproject.toml or the constraints changed since the last run.
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.isthmus-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python packages into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]' 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
  .venv/bin/python -c "import isthmus, proxy, pilot, citadel, mixer, bookinfo" 
  echo "$want" > "$stamp"
fi
