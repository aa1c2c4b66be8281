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

# The virtualenv, with the exact versions of constraints.txt. `make demo` needs only the runtime
# packages (ISTHMUS_EXTRAS=""), `make test` the dev tools too (default ISTHMUS_EXTRAS=dev). Nothing is
# done when pyproject.toml and the constraints are unchanged since the last install and it had the extras.
PY=${PYTHON:-python3}
EXTRAS=${ISTHMUS_EXTRAS-dev}
stamp=.venv/.isthmus-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
have=$(cat "$stamp" 2>/dev/null || true)
[ "$have" = "$want" ] && have="$want dev"  # stamps before extras were recorded: always dev
if [ "$have" = "$want $EXTRAS" ] || { [ -z "$EXTRAS" ] && [ "${have%% *}" = "$want" ]; }; then
  exit 0
fi

# Speed (a fresh clone is ready in seconds once this machine has the wheels):
# - the pinned wheels are kept in a wheelhouse outside the clone, downloaded once per constraints.txt,
#   and installed from it with --no-index (no index pages fetched, no resolver round trips);
# - with a pip that can install into another interpreter (--python, pip >= 22.3), the venv is created
#   without running ensurepip, and pip itself is installed into it from the wheelhouse;
# - --no-compile: modules are byte-compiled when first imported, not all of them up front.
# Any failure on the fast path falls back to a plain online install with the constraints.
WHEELS=${ISTHMUS_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/isthmus/wheels}
host_pip=$("$PY" -m pip --python "$(command -v "$PY")" --version 2>/dev/null | awk '{print $2}' || true)
if [ ! -x .venv/bin/python ]; then
  if [ -n "$host_pip" ]; then "$PY" -m venv --without-pip .venv; else "$PY" -m venv .venv; fi
fi
if .venv/bin/python -m pip --version >/dev/null 2>&1; then
  PIP=(.venv/bin/python -m pip) self_pip=()
else
  PIP=("$PY" -m pip --python .venv/bin/python) self_pip=("pip==$host_pip")
fi
pins=$(mktemp)
trap 'rm -f "$pins"' EXIT
grep -v '^#' constraints.txt | grep . > "$pins"
build_reqs=("setuptools>=68" ${host_pip:+"pip==$host_pip"})
complete="$WHEELS/.complete-$(cat "$pins" <(printf '%s\n' "${build_reqs[@]}") | sha256sum | cut -c1-16)"
quiet() { grep -v "is ignored: it is neither a file nor a directory" || true; }
spec=.; [ -n "$EXTRAS" ] && spec=".[$EXTRAS]"
echo "setup: installing Python packages into .venv${EXTRAS:+ (with $EXTRAS)}"
if [ ! -f "$complete" ]; then
  echo "setup: downloading the pinned wheels into $WHEELS (once per constraints.txt)"
  mkdir -p "$WHEELS"
  if "${PIP[@]}" download -q --disable-pip-version-check --no-deps --prefer-binary -d "$WHEELS" \
    -r "$pins" "${build_reqs[@]}" 2>&1 | quiet; then
    touch "$complete"
  fi
fi
installed=0
if [ -f "$complete" ]; then
  if "${PIP[@]}" install -q --disable-pip-version-check --no-compile --no-index --find-links "$WHEELS" \
    -c constraints.txt "${self_pip[@]}" -e "$spec" 2>&1 | quiet; then
    installed=1
  fi
fi
if [ "$installed" -ne 1 ]; then
  echo "setup: installing from the package index"
  if ! "${PIP[@]}" install -q --disable-pip-version-check --prefer-binary -c constraints.txt \
    "${self_pip[@]}" -e "$spec" 2>&1 | quiet; then
    echo "setup: pip install failed" >&2
    exit 1
  fi
fi
.venv/bin/python -c "import isthmus, proxy, pilot, citadel, mixer, bookinfo"
echo "$want $EXTRAS" > "$stamp"
