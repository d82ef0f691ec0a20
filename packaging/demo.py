#!/usr/bin/env python3
"""Watch two Claude Code sessions talk over claudemesh, with no Claude Code.

The demo plays two sessions, "alice" and "bob", the way Claude Code would:
it starts one claudemesh-shim per session and speaks MCP (JSON-RPC over
stdio) to each. The shims start a private claudemeshd, whose zero-config
local mesh connects them; the messages are end-to-end encrypted on the way.
Everything runs in a temporary directory, so the demo never touches your
own daemon, keys or config.

    python3 packaging/demo.py                  # binaries from ~/.local/bin or PATH
    python3 packaging/demo.py --bin-dir target/release
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import queue

COLOURS = sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def paint(code, text):
    return f"\033[{code}m{text}\033[0m" if COLOURS else text


class Session:
    """One simulated Claude Code session: a shim under its own parent."""

    def __init__(self, name, shim, env):
        self.name = name
        self.next_id = 1
        self.lines = queue.Queue()
        self.notifications = []
        # `sh` stays as the shim's parent: the "Claude Code" process that
        # the daemon ties the session to.
        self.proc = subprocess.Popen(
            ["sh", "-c", '"$0"; exit $?', shim],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**env, "CLAUDEMESH_DISPLAY_NAME": name, "CLAUDEMESH_CHANNEL": "1"},
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.request("initialize", {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "claudemesh-demo", "version": "1"},
        })
        self._write({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def _write(self, msg):
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def request(self, method, params):
        rid = self.next_id
        self.next_id += 1
        self._write({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        while True:
            msg = self.lines.get(timeout=30)
            if msg.get("id") == rid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]
            self.notifications.append(msg)

    def tool(self, name, **args):
        say(self.name, paint("2", f"→ {name}({json.dumps(args, ensure_ascii=False) if args else ''})"))
        result = self.request("tools/call", {"name": name, "arguments": args})
        text = "\n".join(c.get("text", "") for c in result.get("content", []))
        for line in text.splitlines():
            say(self.name, paint("2", f"  {line}"))
        if result.get("isError"):
            raise RuntimeError(f"{name} failed: {text}")
        return result.get("structuredContent") or {}

    def wait_channel(self, limit=20):
        end = time.time() + limit
        while time.time() < end:
            for n in self.notifications:
                if n.get("method") == "notifications/claude/channel":
                    self.notifications.remove(n)
                    return n["params"]
            try:
                self.notifications.append(self.lines.get(timeout=0.2))
            except queue.Empty:
                pass
        raise RuntimeError(f"{self.name} received no message")

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def say(who, text):
    colour = {"alice": "36", "bob": "35"}.get(who, "33")
    print(f"{paint(colour, f'{who:>6}')} │ {text}", flush=True)


def find_bin(name, bin_dir):
    if bin_dir:
        path = os.path.join(bin_dir, name)
        return os.path.abspath(path) if os.access(path, os.X_OK) else None
    local = os.path.expanduser(f"~/.local/bin/{name}")
    return local if os.access(local, os.X_OK) else shutil.which(name)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin-dir", help="where claudemesh-shim and claudemeshd are")
    args = parser.parse_args()
    shim, daemon = find_bin("claudemesh-shim", args.bin_dir), find_bin("claudemeshd", args.bin_dir)
    if not shim or not daemon:
        sys.exit("claudemesh-shim and claudemeshd not found: run ./packaging/install.sh, or pass --bin-dir target/release")

    with tempfile.TemporaryDirectory(prefix="claudemesh-demo-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDEMESH_")}
        env.update({
            "CLAUDEMESH_CONFIG_DIR": os.path.join(tmp, "config"),
            "CLAUDEMESH_DATA_DIR": os.path.join(tmp, "data"),
            "CLAUDEMESH_RUNTIME_DIR": os.path.join(tmp, "run"),
            "CLAUDEMESH_KEYSTORE": "file",
            "CLAUDEMESH_DAEMON": daemon,
        })
        say("demo", f"a private daemon and local mesh in {tmp}")
        alice = bob = None
        try:
            alice = Session("alice", shim, env)
            bob = Session("bob", shim, env)
            bob.tool("set_summary", summary="refactoring the payments API")
            for _ in range(50):
                peers = alice.tool("list_peers").get("peers", [])
                if any(p.get("name") == "bob" for p in peers):
                    break
                time.sleep(0.2)
            sent = alice.tool("send_message", to="bob", priority="now",
                              text="Did the payments schema change? I'm writing the client.")
            pushed = bob.wait_channel()
            say("bob", paint("1", f"📨 from {pushed['meta']['from']}: {pushed['content']}"))
            bob.tool("send_message", to="alice", priority="now",
                     text="Yes: amount is now integer cents. Migration is in db/042.")
            pushed = alice.wait_channel()
            say("alice", paint("1", f"📨 from {pushed['meta']['from']}: {pushed['content']}"))
            alice.tool("message_status", message_id=sent["messageId"])
            say("demo", "a pushed message stays 'delivered' until a Claude Code hook finds it in the "
                        "session transcript: then it is 'seen' (docs/shim.md)")
            say("demo", "done: two sessions, one daemon, messages end-to-end encrypted")
        finally:
            for s in (alice, bob):
                if s:
                    s.close()
            stop_daemon(tmp)


def stop_daemon(tmp):
    """Stops the daemon that runs on this demo's socket (and only that one)."""
    sock = os.path.join(tmp, "run")
    for pid in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            continue
        if f"CLAUDEMESH_RUNTIME_DIR={sock}".encode() in environ:
            try:
                os.kill(int(pid), 15)
            except OSError:
                pass


if __name__ == "__main__":
    main()
