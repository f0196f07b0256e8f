# Sourced by scripts/web-check and scripts/report-check: installs what is missing (Debian's
# chromium, when root; tools/web-check's node_modules from its lock file). Install output goes
# to stderr. Needs TOOL (this folder) and a `die` function.
if [[ ! -x /usr/bin/chromium ]]; then
  [[ "$(id -u)" == 0 ]] || die "/usr/bin/chromium is missing; install Debian's chromium as root (apt-get install chromium)"
  echo "installing Debian's chromium…" >&2
  export DEBIAN_FRONTEND=noninteractive
  # The package lists may be missing or stale on a fresh machine: update once and retry.
  apt-get install -y chromium >&2 || { apt-get update >&2 && apt-get install -y chromium >&2; } \
    || die "could not install chromium"
fi

command -v node >/dev/null || die "node is missing (Node.js 20 or newer)"
command -v npm >/dev/null || die "npm is missing"
if [[ ! -f "$TOOL/node_modules/playwright-core/package.json" ]]; then
  echo "installing playwright-core (npm ci)…" >&2
  # playwright-core downloads no browser; the variable makes sure nothing tries to.
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix "$TOOL" --no-audit --no-fund >&2 \
    || die "npm ci failed in tools/web-check"
fi
