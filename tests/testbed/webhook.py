#!/usr/bin/env python3
"""A webhook receiver for the test bed, run inside a test VPS (python3, standard library only):

    python3 vpskit-webhook PORT FILE

Every POST (any path) is appended to FILE as one JSON line {"path": ..., "body": ..., "headers": {...}}: `path`
with its query string, `body` parsed as JSON when it is JSON, else the text. Answers 204. A GET answers 200
(a readiness probe; nothing is recorded). tests/support.py `Webhook` installs and starts it.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    server_version = "vpskit-webhook"
    out = ""

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers up to the empty line
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self) -> None:
        raw = self._body()
        text = raw.decode("utf-8", errors="replace")
        try:
            body = json.loads(text)
        except ValueError:
            body = text
        line = json.dumps({"path": self.path, "body": body, "headers": dict(self.headers.items())})
        with LOCK, open(self.out, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        self.send_response(204)
        self.end_headers()

    def do_GET(self) -> None:
        payload = b"vpskit-webhook\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: vpskit-webhook PORT FILE", file=sys.stderr)
        return 2
    Handler.out = argv[1]
    open(argv[1], "a").close()  # the file exists (empty) once the receiver listens
    server = ThreadingHTTPServer(("0.0.0.0", int(argv[0])), Handler)  # reached over the test network
    print(f"vpskit-webhook on :{argv[0]}, recording POSTs to {argv[1]}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
