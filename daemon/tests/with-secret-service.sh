#!/usr/bin/env bash
# with-secret-service.sh CMD [ARG...]
#
# Runs CMD inside a private D-Bus session bus with an unlocked gnome-keyring
# serving the Secret Service API, then stops both and exits with CMD's
# status. The keyring lives in a throwaway directory, so no real login
# keyring is read, unlocked or changed. Used by
# daemon/tests/keystore_secret_service.rs (which re-runs itself under this
# script when DBUS_SESSION_BUS_ADDRESS is unset) and usable by hand:
#
#   daemon/tests/with-secret-service.sh cargo test -p claudemesh-daemon --test keystore_secret_service
#
# Needs (Debian/Ubuntu): apt-get install -y --no-install-recommends dbus gnome-keyring
# (`dbus` brings dbus-run-session, dbus-send and the bus daemon; the
# project's Rust machine image has it already, gnome-keyring it has not.)
set -euo pipefail

if [ "$#" -eq 0 ]; then
    echo "usage: $0 CMD [ARG...]" >&2
    exit 2
fi
for tool in dbus-run-session dbus-send gnome-keyring-daemon; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "$0: $tool not found; install it with:" >&2
        echo "    apt-get install -y --no-install-recommends dbus gnome-keyring" >&2
        exit 127
    fi
done

keyring_home=$(mktemp -d "${TMPDIR:-/tmp}/claudemesh-keyring.XXXXXX")
trap 'rm -rf "$keyring_home"' EXIT

# Remember the caller's environment for CMD; the bus daemon, and so any
# service it activates, runs with the throwaway HOME and XDG directories.
export CLAUDEMESH_ORIG_HOME="${HOME-}"
export CLAUDEMESH_ORIG_XDG_DATA_HOME="${XDG_DATA_HOME-}"
export CLAUDEMESH_ORIG_XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR-}"

HOME="$keyring_home" XDG_DATA_HOME="$keyring_home/data" XDG_RUNTIME_DIR="$keyring_home" \
dbus-run-session -- bash -c '
    set -u
    # gnome-keyring-daemon reads a password on stdin, creates a "login"
    # keyring with it, unlocks it and makes it the default collection. The
    # password must not be empty: with an empty one gnome-keyring 42 creates
    # no login keyring and no default collection, and the first write then
    # waits for a password prompt that a headless session cannot show. The
    # keyring is thrown away afterwards, so the fixed password protects
    # nothing. It runs in the foreground (in the background of this shell)
    # so that it can be stopped: it does not always exit with its bus.
    printf "%s" claudemesh-test |
        gnome-keyring-daemon --foreground --unlock --components=secrets >/dev/null 2>&1 &
    keyring_pid=$!
    # Wait until it owns the Secret Service name; asking for the name before
    # then would make the bus start a second daemon.
    owned=
    for _ in $(seq 100); do
        if dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
            org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets 2>/dev/null |
            grep -q "boolean true"; then
            owned=1
            break
        fi
        sleep 0.1
    done
    if [ -z "$owned" ]; then
        echo "with-secret-service.sh: gnome-keyring-daemon did not take the Secret Service name" >&2
        kill "$keyring_pid" 2>/dev/null
        exit 1
    fi
    restore() {
        if [ -n "$2" ]; then export "$1=$2"; else unset "$1"; fi
    }
    restore HOME "$CLAUDEMESH_ORIG_HOME"
    restore XDG_DATA_HOME "$CLAUDEMESH_ORIG_XDG_DATA_HOME"
    restore XDG_RUNTIME_DIR "$CLAUDEMESH_ORIG_XDG_RUNTIME_DIR"
    unset CLAUDEMESH_ORIG_HOME CLAUDEMESH_ORIG_XDG_DATA_HOME CLAUDEMESH_ORIG_XDG_RUNTIME_DIR
    status=0
    "$@" || status=$?
    kill "$keyring_pid" 2>/dev/null
    wait "$keyring_pid" 2>/dev/null
    exit "$status"
' with-secret-service "$@"
