#!/usr/bin/env bash
# The test command: installs what the tests need and is missing (saying what), then runs
#   cargo test --workspace --all-features
# Usage: scripts/test.sh [--prereqs-only] [extra cargo test arguments...]
# Run it as root (as CI does): the jail tests need root, and installing Debian packages does.
# Without root it installs nothing and, if something is missing, prints the command to run.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests run for real: nft/ip/iptables for nsjail and the far host; curl,
# git, python3, node, tmux as clients in the jail; nginx as a real origin server; keyctl
# (keyutils) for the kernel keyring probes; setpriv/unshare (util-linux), useradd (passwd),
# ps (procps) for the jail tests; openssl for test certificates; gcc (cc) for the C helper of
# landjail's race test; sudo and setcap (libcap2-bin) for nsjail without user namespaces;
# python3-pip, golang-go and skopeo for `pip download`, `go mod download` and `skopeo copy` in
# the presets test; openssh-client (ssh-agent, ssh-add, ssh-keygen) for the jail's SSH agent
# filter (npm comes with the agents below, cargo with the Rust toolchain that builds
# the tests, apt-get and dpkg-deb with Debian).
DEBIAN_PACKAGES=(
  nftables iptables iproute2 curl git tmux procps passwd util-linux ca-certificates openssl
  nodejs python3 python3-requests python3-pip golang-go skopeo gcc nginx keyutils sudo
  libcap2-bin bubblewrap socat openssh-client
)
# Python modules (import name, pinned pip requirement): the Coder module check parses HCL; the
# metrics test reads /metrics with the Prometheus text-format parser.
PYTHON_MODULES=(
  "hcl2 python-hcl2==8.1.4"
  "requests requests==2.32.3"
  "prometheus_client prometheus-client==0.26.0"
)
# npm packages: the Node clients use only Node's own modules. The agent CLIs the agents test
# runs in the jails go under AGENTS_PREFIX (readable by the unprivileged test user), pinned;
# an install with these versions already there is kept (CI may cache the directory).
AGENTS_PREFIX=/opt/boundary-agents
AGENT_PACKAGES=(
  "@anthropic-ai/claude-code@2.1.332"
  "@openai/codex@0.171.0"
)

say() { echo "scripts/test.sh: $*" >&2; }
is_root() { [ "$(id -u)" = 0 ]; }

missing_debian() {
  local p
  for p in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
}

install_debian() {
  local missing
  missing=$(missing_debian | tr '\n' ' ')
  [ -n "${missing// /}" ] || return 0
  if ! is_root; then
    say "missing Debian packages: $missing"
    say "install them as root:  apt-get install -y --no-install-recommends $missing"
    exit 2
  fi
  say "installing Debian packages: $missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # shellcheck disable=SC2086 # one word per package
  apt-get install -y -q --no-install-recommends $missing
}

install_python() {
  local entry module req missing=()
  for entry in "${PYTHON_MODULES[@]}"; do
    read -r module req <<<"$entry"
    python3 -c "import $module" 2>/dev/null || missing+=("$req")
  done
  [ "${#missing[@]}" -gt 0 ] || return 0
  if ! is_root; then
    say "missing Python modules: ${missing[*]}"
    say "install them:  python3 -m pip install ${missing[*]}"
    exit 2
  fi
  if ! python3 -m pip --version >/dev/null 2>&1; then
    say "installing Debian package python3-pip (to install ${missing[*]})"
    apt-get update -q
    apt-get install -y -q --no-install-recommends python3-pip
  fi
  say "installing Python modules: ${missing[*]}"
  # Debian marks its Python as externally managed; these test-only modules go in anyway.
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --disable-pip-version-check "${missing[@]}"
}

missing_agents() {
  local spec name version
  for spec in "${AGENT_PACKAGES[@]}"; do
    name=${spec%@*}
    version=${spec##*@}
    grep -qs "\"version\": \"$version\"" "$AGENTS_PREFIX/lib/node_modules/$name/package.json" ||
      echo "$spec"
  done
}

install_agents() {
  local missing
  missing=$(missing_agents | tr '\n' ' ')
  [ -n "${missing// /}" ] || return 0
  if ! is_root; then
    say "missing agent CLIs: $missing"
    say "install them as root:  npm install -g --prefix $AGENTS_PREFIX $missing"
    exit 2
  fi
  if ! command -v npm >/dev/null; then
    # NodeSource's nodejs carries npm; Debian's own nodejs does not.
    say "installing Debian package npm (to install $missing)"
    apt-get update -q
    apt-get install -y -q --no-install-recommends npm
  fi
  say "installing agent CLIs into $AGENTS_PREFIX: $missing"
  # Claude Code's postinstall puts its native binary in place; umask 022 keeps it readable.
  # shellcheck disable=SC2086 # one word per package
  (umask 022 && npm install -g --prefix "$AGENTS_PREFIX" --no-fund --no-audit \
    --allow-scripts=@anthropic-ai/claude-code $missing)
}

install_debian
install_python
install_agents
if [ "${1:-}" = "--prereqs-only" ]; then
  exit 0
fi
if ! is_root; then
  say "not root: the jail and far-host tests need root and will fail (CI runs as root)"
fi
exec cargo test --workspace --all-features "$@"
