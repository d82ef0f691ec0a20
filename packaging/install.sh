#!/bin/sh
# claudemesh quickstart: build, install, start the daemon, register with
# Claude Code. At the end the daemon runs, the `local` mesh is joined (the
# daemon does that by itself when it starts) and the shim is registered
# with Claude Code (or the `claude mcp add` line to run is printed).
#
#   packaging/install.sh [--prefix DIR] [--from DIR] [--no-start]
#
#   --prefix DIR   install into DIR/bin (default: ~/.local, so ~/.local/bin)
#   --from DIR     take prebuilt binaries from DIR instead of building
#   --no-start     only build and install the binaries
#
# Starting the daemon: as a systemd user service when `systemctl --user`
# works (Linux), as a launchd agent on macOS, otherwise `claudemeshd run`
# detached, logging to the data directory's claudemeshd.log.
set -eu

prefix="${HOME:?HOME must be set}/.local"
from=""
start=1

usage() {
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || { echo "install.sh: --prefix needs a directory" >&2; exit 2; }
                  prefix="$2"; shift 2 ;;
        --prefix=*) prefix="${1#--prefix=}"; shift ;;
        --from) [ $# -ge 2 ] || { echo "install.sh: --from needs a directory" >&2; exit 2; }
                from="$2"; shift 2 ;;
        --from=*) from="${1#--from=}"; shift ;;
        --no-start) start=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

say() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

root=$(cd "$(dirname "$0")/.." && pwd)
bins="claudemeshd claudemesh-shim claudemesh-ctl claudemesh-broker"

# 1. Build.
if [ -z "$from" ]; then
    command -v cargo >/dev/null 2>&1 || die "cargo is not on PATH: install Rust (https://rustup.rs) first"
    say "building release binaries (cargo build --release --bins)"
    (cd "$root" && cargo build --release --bins)
    from="${CARGO_TARGET_DIR:-$root/target}/release"
fi

# 2. Install (rename into place: a running binary can be replaced safely).
bindir="$prefix/bin"
mkdir -p "$bindir"
for b in $bins; do
    [ -x "$from/$b" ] || die "$from/$b is missing (did the build fail?)"
    cp "$from/$b" "$bindir/.$b.new"
    chmod 755 "$bindir/.$b.new"
    mv -f "$bindir/.$b.new" "$bindir/$b"
done
say "installed $bins into $bindir"
case ":${PATH:-}:" in
    *":$bindir:"*) ;;
    *) warn "$bindir is not on your PATH; add it: export PATH=\"$bindir:\$PATH\"" ;;
esac

if [ "$start" = 0 ]; then
    say "not starting the daemon (--no-start); next: $bindir/claudemesh-ctl service install && $bindir/claudemesh-ctl install"
    exit 0
fi

ctl="$bindir/claudemesh-ctl"
daemon="$bindir/claudemeshd"

# 3. Start the daemon (a running one is replaced by the new binary).
running_pid() {
    "$ctl" status --json 2>/dev/null | sed -n 's/^ *"pid": *\([0-9][0-9]*\).*/\1/p' | head -n 1
}

started=""
if [ "$(uname -s)" = Darwin ]; then
    say "starting claudemeshd as a launchd agent"
    "$ctl" service install --daemon "$daemon"
    started="launchd agent dev.claudemesh.claudemeshd"
elif command -v systemctl >/dev/null 2>&1 && systemctl --user show-environment >/dev/null 2>&1; then
    old=$(running_pid || true)
    if [ -n "$old" ] && ! systemctl --user is-active --quiet claudemeshd 2>/dev/null; then
        say "stopping the claudemeshd started outside systemd (pid $old)"
        kill "$old" 2>/dev/null || true
        sleep 1
    fi
    say "starting claudemeshd as a systemd user service"
    "$ctl" service install --daemon "$daemon"
    systemctl --user restart claudemeshd
    started="systemd user service claudemeshd (systemctl --user status claudemeshd)"
else
    data="${CLAUDEMESH_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/claudemesh}"
    mkdir -p "$data"
    chmod 700 "$data"
    log="$data/claudemeshd.log"
    old=$(running_pid || true)
    if [ -n "$old" ]; then
        say "stopping the running claudemeshd (pid $old) to start the new one"
        kill "$old" 2>/dev/null || true
        i=0
        while [ $i -lt 50 ] && kill -0 "$old" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
    fi
    say "systemd --user is not available: starting claudemeshd run in the background (log: $log)"
    if command -v setsid >/dev/null 2>&1; then
        setsid "$daemon" run >>"$log" 2>&1 </dev/null &
    else
        nohup "$daemon" run >>"$log" 2>&1 </dev/null &
    fi
    started="background process (pid $!), log $log; it does not restart by itself"
fi

# 4. Wait for it to answer and to have joined its local mesh.
i=0
until "$ctl" status >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -le 100 ] || die "claudemeshd did not answer within 10 s; see \`$ctl doctor\`"
    sleep 0.1
done
i=0
until "$ctl" list --json 2>/dev/null | grep -q '"local": *true'; do
    i=$((i + 1))
    if [ $i -gt 100 ]; then
        warn "the daemon answers but has not joined its local mesh yet; see \`$ctl status\`"
        break
    fi
    sleep 0.1
done
say "claudemeshd is running: $started"

# 5. Register with Claude Code (prints the `claude mcp add` line when
#    `claude` is not on PATH).
say "registering with Claude Code"
"$ctl" install

say "done. Check everything with: $ctl doctor"
"$ctl" list || true
