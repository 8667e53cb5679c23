#!/usr/bin/env python3
"""Mock model APIs for the agent CLI tests (integration/tests/agents.rs). Stdlib only.

One HTTPS server on a loopback address of its own, port 443, with a certificate for every name given,
issued by a CA made here with openssl (`DIR/ca.pem`, given to boundary as
--upstream-ca-file). boundary maps the real API names to it with --resolve, so the CLIs run
unmodified against their default hosts. It serves:

- the Anthropic Messages API (`POST /v1/messages`, streamed as server-sent events): the first
  turn of a conversation that offers the Bash tool is answered with a `tool_use` of Bash
  running TOOL_COMMAND; a request carrying a `tool_result` is answered with text;
- the OpenAI Responses API (`POST /v1/responses`, server-sent events; a GET with `Upgrade:
  websocket` on the same path speaks the Responses WebSocket protocol): the first turn is
  answered with a shell `function_call` running TOOL_COMMAND, a request carrying a
  `function_call_output` with text;
- `GET /ok` with the body `ok` (the allowed URL the tool fetches);
- anything else: `404` with a JSON error.

Every request is appended to `DIR/requests.jsonl` (host, method, path, transport, body), which
is what the tests assert on and what the minimal allowlists in docs/policies.md come from.
Usage: mock_api.py DIR ADDR TOOL_COMMAND NAME... ; listens on ADDR port 443 (a loopback address
of the test's own, so the CLIs keep their default port), prints `READY` when listening.
"""

import base64
import hashlib
import http.server
import json
import os
import ssl
import struct
import subprocess
import sys
import threading

DIR = sys.argv[1]
ADDR = sys.argv[2]
TOOL_COMMAND = sys.argv[3]
NAMES = sys.argv[4:]
LOCK = threading.Lock()


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_certs():
    ca_key, ca = os.path.join(DIR, "ca.key"), os.path.join(DIR, "ca.pem")
    key, csr, leaf = (os.path.join(DIR, n) for n in ("leaf.key", "leaf.csr", "leaf.pem"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-days", "2", "-subj", "/CN=boundary agents mock CA",
            "-keyout", ca_key, "-out", ca)
    openssl("req", *ec, "-subj", "/CN=" + NAMES[0], "-keyout", key, "-out", csr)
    ext = os.path.join(DIR, "ext.cnf")
    with open(ext, "w") as f:
        f.write("subjectAltName=" + ",".join("DNS:" + n for n in NAMES) + "\n")
        f.write("extendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-days", "2", "-in", csr, "-CA", ca, "-CAkey", ca_key,
            "-CAcreateserial", "-extfile", ext, "-out", leaf)
    os.chmod(ca, 0o644)
    return leaf, key


def record(entry):
    with LOCK, open(os.path.join(DIR, "requests.jsonl"), "a") as f:
        f.write(json.dumps(entry) + "\n")


def sse(event, data):
    return ("event: %s\ndata: %s\n\n" % (event, json.dumps(data))).encode()


# ---- Anthropic Messages API -------------------------------------------------------------

def anthropic_has_tool_result(body):
    for m in body.get("messages", []):
        content = m.get("content")
        if isinstance(content, list):
            for c in content:
                if isinstance(c, dict) and c.get("type") == "tool_result":
                    return True
    return False


def anthropic_offers_bash(body):
    return any(t.get("name") == "Bash" for t in body.get("tools", []) if isinstance(t, dict))


def anthropic_events(body):
    """The events of one streamed answer: a Bash tool_use on a first turn, else text."""
    model = body.get("model", "claude-mock")
    msg = {"id": "msg_mock", "type": "message", "role": "assistant", "model": model,
           "content": [], "stop_reason": None, "stop_sequence": None,
           "usage": {"input_tokens": 12, "output_tokens": 1}}
    out = [sse("message_start", {"type": "message_start", "message": msg})]
    if anthropic_offers_bash(body) and not anthropic_has_tool_result(body):
        block = {"type": "tool_use", "id": "toolu_mock_1", "name": "Bash", "input": {}}
        args = json.dumps({"command": TOOL_COMMAND, "description": "Fetch two URLs"})
        out.append(sse("content_block_start",
                       {"type": "content_block_start", "index": 0, "content_block": block}))
        half = len(args) // 2
        for part in (args[:half], args[half:]):
            out.append(sse("content_block_delta", {
                "type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": part}}))
        stop = "tool_use"
    else:
        out.append(sse("content_block_start", {
            "type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}))
        for part in ("MOCK-", "ANSWER-DONE"):
            out.append(sse("content_block_delta", {
                "type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": part}}))
        stop = "end_turn"
    out.append(sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
    out.append(sse("message_delta", {
        "type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
        "usage": {"output_tokens": 8}}))
    out.append(sse("message_stop", {"type": "message_stop"}))
    return out


def anthropic_json(body):
    """A non-streamed answer (the CLI's side requests, e.g. titles)."""
    return {"id": "msg_mock", "type": "message", "role": "assistant",
            "model": body.get("model", "claude-mock"),
            "content": [{"type": "text", "text": "MOCK-ANSWER-DONE"}],
            "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 8}}


# ---- OpenAI Responses API ---------------------------------------------------------------

def openai_has_output(body):
    items = body.get("input", [])
    return any(isinstance(i, dict) and i.get("type") == "function_call_output" for i in items)


def openai_shell_tool(body):
    """Name and argument shape of the shell tool the request offers."""
    names = [t.get("name") for t in body.get("tools", []) if isinstance(t, dict)]
    for name in ("exec_command", "shell_command", "shell"):
        if name in names:
            return name
    return None


def openai_events(body):
    """The events of one answer: a shell function_call on a first turn, else text."""
    rid = "resp_mock_%d" % (2 if openai_has_output(body) else 1)
    out = [{"type": "response.created", "response": {"id": rid}}]
    tool = openai_shell_tool(body)
    if tool and not openai_has_output(body):
        if tool == "shell":
            args = {"command": ["bash", "-lc", TOOL_COMMAND]}
        elif tool == "exec_command":
            args = {"cmd": TOOL_COMMAND}
        else:
            args = {"command": TOOL_COMMAND}
        item = {"type": "function_call", "id": "fc_mock_1", "call_id": "call_mock_1",
                "name": tool, "arguments": json.dumps(args)}
    else:
        item = {"type": "message", "role": "assistant", "id": "msg_mock_1",
                "content": [{"type": "output_text", "text": "MOCK-ANSWER-DONE"}]}
    out.append({"type": "response.output_item.added", "output_index": 0, "item": item})
    out.append({"type": "response.output_item.done", "output_index": 0, "item": item})
    out.append({"type": "response.completed", "response": {
        "id": rid, "usage": {"input_tokens": 12, "input_tokens_details": None,
                             "output_tokens": 8, "output_tokens_details": None,
                             "total_tokens": 20}}})
    return out


# ---- WebSocket (RFC 6455), just what the Responses WebSocket transport needs ------------

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_read(rfile):
    """One message (text), or None when the peer closes."""
    data = b""
    while True:
        head = rfile.read(2)
        if len(head) < 2:
            return None
        fin, op = head[0] & 0x80, head[0] & 0x0F
        n = head[1] & 0x7F
        if n == 126:
            n = struct.unpack(">H", rfile.read(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", rfile.read(8))[0]
        mask = rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(rfile.read(n)))
        if op == 8:
            return None
        if op in (9, 10):
            continue
        data += payload
        if fin:
            return data.decode()


def ws_frame(text, op=1):
    payload = text.encode() if isinstance(text, str) else text
    n = len(payload)
    if n < 126:
        head = struct.pack(">BB", 0x80 | op, n)
    elif n < 65536:
        head = struct.pack(">BBH", 0x80 | op, 126, n)
    else:
        head = struct.pack(">BBQ", 0x80 | op, 127, n)
    return head + payload


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        if self.headers.get("Content-Encoding") == "zstd" or not raw:
            return raw, {}
        try:
            return raw, json.loads(raw)
        except ValueError:
            return raw, {}

    def note(self, transport, body):
        record({"host": (self.headers.get("Host") or "").split(":")[0],
                "method": self.command, "path": self.path, "transport": transport,
                "body": body})

    def send_json(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def stream(self, chunks):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for c in chunks:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(c), c))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def do_GET(self):
        path = self.path.split("?")[0]
        if self.headers.get("Upgrade", "").lower() == "websocket":
            return self.websocket()
        self.note("http", None)
        if path == "/ok":
            data = b"ok\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_json(404, {"error": {"type": "not_found", "message": "mock: " + path}})

    def do_HEAD(self):
        self.note("http", None)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        path = self.path.split("?")[0]
        _, body = self.body()
        self.note("http", body)
        if path == "/v1/messages":
            if body.get("stream"):
                return self.stream(anthropic_events(body))
            return self.send_json(200, anthropic_json(body))
        if path.endswith("/responses"):
            return self.stream([sse(e["type"], e) for e in openai_events(body)])
        self.send_json(404, {"error": {"type": "not_found", "message": "mock: " + path}})

    def websocket(self):
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.note("websocket-open", None)
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        while True:
            msg = ws_read(self.rfile)
            if msg is None:
                break
            try:
                body = json.loads(msg)
            except ValueError:
                body = {}
            self.note("websocket", body)
            for e in openai_events(body):
                self.wfile.write(ws_frame(json.dumps(e)))
            self.wfile.flush()
        self.close_connection = True


def main():
    leaf, key = make_certs()
    server = http.server.ThreadingHTTPServer((ADDR, 443), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(leaf, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("READY", flush=True)
    server.serve_forever()


main()
