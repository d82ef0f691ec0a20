#!/usr/bin/env python3
"""A scripted stand-in for the Anthropic Messages API, for running real
Claude Code sessions offline in tests (the one thing in those tests that is
not real: there is no model here).

    scripted_api.py --script SCRIPT.json --log REQUESTS.jsonl --port-file PORT

It listens on 127.0.0.1 (a free port, written to PORT), answers every
`POST /v1/messages` and appends each request body to REQUESTS.jsonl as
`{"main": bool, "step": n, "body": {...}}`, so a test can read exactly
what the model was shown.

A request of the session's main loop (it offers tools) gets the next step
of the script; any other request (titles, summaries, checks Claude Code
makes on the side) gets a short text and consumes no step. A step is:

    {"tool": "mcp__claudemesh__send_message", "input": {...}}   a tool_use
    {"text": "..."}                                              end_turn

with optional keys:
    "wait_for": [PATH] answer only once every PATH exists (at most 120 s each)
    "touch": PATH      create PATH when this step's request arrives (the
                       previous step's tool has run by then)
    "sleep_s": N       answer N seconds later
In a tool's input, the string "$FIRST_MESSAGE_ID" is replaced by the first
message id (`m-` and 24 hex digits) in the conversation: the id the
session's first send_message returned.

When the script is over, every main request gets the text "Done.".
Answers are server-sent events when the request asks for `stream`.
Standard library only.
"""

import argparse
import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WAIT_LIMIT_S = 120


class Script:
    def __init__(self, path, log_path):
        with open(path, encoding="utf-8") as f:
            self.steps = json.load(f)["steps"]
        self.next = 0
        self.lock = threading.Lock()
        self.log_path = log_path

    def take(self, body):
        """The step for this request (None for a side request) and its
        index, logged."""
        main = bool(body.get("tools"))
        with self.lock:
            step = None
            index = -1
            if main:
                index = self.next
                step = self.steps[index] if index < len(self.steps) else {"text": "Done."}
                self.next += 1
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write(json.dumps({"main": main, "step": index, "body": body}) + "\n")
        return step, index


def wait_for(path):
    deadline = time.monotonic() + WAIT_LIMIT_S
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)


def with_message_id(step, body):
    if "$FIRST_MESSAGE_ID" not in json.dumps(step.get("input", {})):
        return step
    found = re.search(r"m-[0-9a-f]{24}", json.dumps(body.get("messages", [])))
    text = json.dumps(step["input"]).replace("$FIRST_MESSAGE_ID", found.group(0) if found else "")
    return dict(step, input=json.loads(text))


def content_of(step, index):
    if "tool" in step:
        block = {
            "type": "tool_use",
            "id": "toolu_%02d%s" % (index, os.urandom(6).hex()),
            "name": step["tool"],
            "input": step.get("input", {}),
        }
        return [block], "tool_use"
    return [{"type": "text", "text": step["text"]}], "end_turn"


def message(model, content, stop_reason):
    return {
        "id": "msg_scripted_%s" % os.urandom(8).hex(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 10},
    }


def sse_events(msg):
    """The events of a streamed answer carrying `msg`."""
    start = dict(msg, content=[], stop_reason=None)
    start["usage"] = {"input_tokens": 10, "output_tokens": 1}
    yield "message_start", {"type": "message_start", "message": start}
    for i, block in enumerate(msg["content"]):
        if block["type"] == "text":
            yield "content_block_start", {
                "type": "content_block_start",
                "index": i,
                "content_block": {"type": "text", "text": ""},
            }
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            yield "content_block_start", {
                "type": "content_block_start",
                "index": i,
                "content_block": dict(block, input={}),
            }
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        yield "content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta}
        yield "content_block_stop", {"type": "content_block_stop", "index": i}
    yield "message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": None},
        "usage": {"output_tokens": 10},
    }
    yield "message_stop", {"type": "message_stop"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    script = None

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        self.reply(404, {"type": "error", "error": {"type": "not_found_error", "message": "no"}})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        path = self.path.split("?")[0]
        if not path.endswith("/v1/messages"):
            if path.endswith("/count_tokens"):
                return self.reply(200, {"input_tokens": 100})
            return self.reply(404, {"type": "error", "error": {"type": "not_found_error", "message": path}})
        try:
            body = json.loads(raw)
        except ValueError:
            return self.reply(400, {"type": "error", "error": {"type": "invalid_request_error", "message": "not JSON"}})
        step, index = self.script.take(body)
        if step is None:
            content, stop = [{"type": "text", "text": "OK"}], "end_turn"
        else:
            if "touch" in step:
                open(step["touch"], "a").close()
            for path in step.get("wait_for", []):
                wait_for(path)
            time.sleep(step.get("sleep_s", 0))
            step = with_message_id(step, body)
            content, stop = content_of(step, index)
        msg = message(body.get("model", "claude-scripted"), content, stop)
        if body.get("stream"):
            self.stream(msg)
        else:
            self.reply(200, msg)

    def reply(self, code, value):
        data = json.dumps(value).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def stream(self, msg):
        chunks = [
            ("event: %s\ndata: %s\n\n" % (name, json.dumps(data))).encode()
            for name, data in sse_events(msg)
        ]
        payload = b"".join(chunks)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--script", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--port-file", required=True)
    args = parser.parse_args()
    Handler.script = Script(args.script, args.log)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(tmp, args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
