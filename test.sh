#!/usr/bin/env bash
# ./test.sh — the one test command (README "Run the tests"; CI's .ci/run
# calls exactly this). It provisions what the tests need, then runs the
# format check, clippy and every test of the workspace, timing each stage.
#
#   ./test.sh              everything
#   ./test.sh --no-lint    skip fmt and clippy (a quicker local loop)
#   ./test.sh --provision  only provision (packages, npm clients), then stop
#
# As root, missing Debian packages are installed with apt-get. As another
# user, the script names the missing packages and stops with status 1
# instead of letting a test fail (or pass) without its prerequisite.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
repo="$(pwd)"

lint=1
provision_only=
for arg in "$@"; do
    case "$arg" in
        --no-lint) lint= ;;
        --provision) provision_only=1 ;;
        -h | --help)
            sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "test.sh: unknown argument '$arg' (try --help)" >&2
            exit 2
            ;;
    esac
done

section() { printf '\n== %s\n' "$*"; }

# Stage timings, printed as each stage ends and again as a summary.
timings=()
stage() {
    local name="$1"
    shift
    section "$name"
    local start end
    start=$(date +%s)
    "$@"
    end=$(date +%s)
    printf -- '-- %s: %ds\n' "$name" "$((end - start))"
    timings+=("$(printf '%6ds  %s' "$((end - start))" "$name")")
}
on_exit() {
    local status=$?
    if [ "${#timings[@]}" -gt 0 ]; then
        section "durations"
        printf '%s\n' "${timings[@]}"
    fi
    if [ "$status" -eq 0 ]; then section "ok"; else section "FAILED (status $status)"; fi
}
trap on_exit EXIT

# The protocol tests read the libsodium vectors from shared/ beside the
# checkout unless CLAUDEMESH_SHARED_DIR says otherwise.
if [ -z "${CLAUDEMESH_SHARED_DIR:-}" ] && [ -d "$repo/../shared" ]; then
    CLAUDEMESH_SHARED_DIR="$(cd "$repo/../shared" && pwd)"
    export CLAUDEMESH_SHARED_DIR
fi
echo "CLAUDEMESH_SHARED_DIR=${CLAUDEMESH_SHARED_DIR:-<unset: the vector tests will say where they looked>}"

# ---------------------------------------------------------------------------
# System packages. One `need_apt <command it provides> <package> [why]` line
# per prerequisite: the package is installed only when the command is
# missing. Add new prerequisites here, nowhere else.
# ---------------------------------------------------------------------------
apt_missing=()
need_apt() { command -v "$1" >/dev/null 2>&1 || apt_missing+=("$2"); }
# The real Secret Service backend: a private D-Bus session with gnome-keyring
# (daemon/tests/with-secret-service.sh, started by
# daemon/tests/keystore_secret_service.rs itself).
need_apt dbus-run-session dbus
need_apt dbus-send dbus
need_apt gnome-keyring-daemon gnome-keyring
# `systemd-analyze verify` checks the user unit (ctl/tests/service.rs).
need_apt systemd-analyze systemd
# The socket test runs a client as another uid.
need_apt setpriv util-linux
# The full-disk tests mount a small tmpfs (broker/tests/disk_full.rs,
# daemon/tests/disk_full.rs).
need_apt mount mount
need_apt umount mount
# The pinned MCP clients (Claude Code, the MCP SDK) run on node.
need_apt node nodejs
need_apt npm npm
# The demo (packaging/demo.py, tests/tests/demo.rs) and the scripted
# Messages API the real Claude Code sessions talk to (tests/claude/).
need_apt python3 python3
# Interactive Claude Code sessions run under tmux (tests/tests/claude_sessions.rs).
need_apt tmux tmux
# The PostgreSQL store's tests start a private server (broker/tests/common/postgres.rs).
# Debian keeps its binaries off PATH: look for initdb where the package puts it.
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && ! command -v initdb >/dev/null 2>&1; then
    apt_missing+=(postgresql)
fi
# The broker cluster's tests put a HAProxy in front of the nodes (issue 10;
# broker/tests/common/cluster.rs). Debian puts it in /usr/sbin, which is off
# a non-root user's PATH.
if [ ! -x /usr/sbin/haproxy ]; then
    need_apt haproxy haproxy
fi

provision_apt() {
    apt-get update -qq
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $packages
}
if [ "${#apt_missing[@]}" -gt 0 ]; then
    # One package may provide several commands: name each once.
    packages=$(printf '%s\n' "${apt_missing[@]}" | sort -u | tr '\n' ' ')
    packages="${packages% }"
    if [ "$(id -u)" -ne 0 ]; then
        echo "test.sh: the tests need these Debian packages, which are missing: $packages" >&2
        echo "Install them (as root) with:" >&2
        echo "    apt-get update && apt-get install -y --no-install-recommends $packages" >&2
        echo "then run ./test.sh again." >&2
        exit 1
    fi
    stage "apt-get install" provision_apt
fi

# PostgreSQL refuses to run as root: as root, the tests run it as `postgres`
# (the Debian package creates that user; make it if it is missing).
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/postgresql --shell /bin/sh postgres
fi

# Real MCP clients for the end-to-end tests, pinned in tests/js/package-lock.json.
stage "npm ci --prefix tests/js" npm ci --prefix tests/js --no-audit --no-fund
if [ -n "$provision_only" ]; then
    exit 0
fi

section "tool versions"
rustc --version
cargo --version
if [ -n "$lint" ]; then
    cargo fmt --version
    cargo clippy --version
fi
echo "node $(node --version), npm $(npm --version)"

if [ -n "$lint" ]; then
    stage "cargo fmt --all -- --check" cargo fmt --all -- --check
    stage "cargo clippy --workspace --all-targets -- -D warnings" \
        cargo clippy --workspace --all-targets -- -D warnings
fi
stage "cargo test --workspace" cargo test --workspace
