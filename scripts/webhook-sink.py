"""A webhook receiver for a local Prefect stack: answers every alert 204 and prints one line per
event (event, severity, message). Stdlib only. See docs/prefect-local.md.

    uv run python scripts/webhook-sink.py 8765 &     # then WEBHOOK_URL=http://127.0.0.1:8765/hook
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(204)
        self.end_headers()
        try:
            e = json.loads(body)
        except ValueError:
            e = {}
        line = e.get("text") or f"{e.get('event')} [{e.get('severity')}] {e.get('message')}"
        print(f"webhook-sink: {line}", flush=True)

    def log_message(self, format: str, *args: object) -> None:
        return


if __name__ == "__main__":
    HTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 8765), Sink).serve_forever()
