"""A chat-completions server on 127.0.0.1 that the OpenAI-compatible teacher talks to in tests.

It speaks the wire format through the official SDK's requests, records every request, and
answers from a script (status, payload, headers; a Content-Type header replaces the default
application/json) when one is queued, else with ``answer``:
by default an echo of the request's prompt wrapped like a chatty model ('Output: "..."').
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def prompt_of(messages: list[dict]) -> str:
    """The prompt (x, y or the one to summarise) in the last user message."""
    return re.search(r"^(?:Modified p|P)rompt: (.*)$", messages[-1]["content"], re.M).group(1)


def echo(messages: list[dict]) -> str:
    """Answer like a chatty model: the request's prompt, with a label and quotes."""
    return f'Output: "{prompt_of(messages)}"'


class ChatServer:
    """Scripted chat-completions endpoint; records every request it gets."""

    def __init__(self, answer: Callable[[list[dict]], str] = echo) -> None:
        self.script: list[tuple[int, dict | str, dict[str, str]]] = []  # popped per request
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.answer = answer
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(
                        {"path": self.path, "headers": self.headers, "body": body}
                    )
                    step = server.script.pop(0) if server.script else None
                status, payload, headers = step or (200, server.reply(body), {})
                data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                headers = {"Content-Type": "application/json", **headers}
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def reply(self, body: dict) -> dict:
        """A chat-completions response carrying ``answer``'s text."""
        content = self.answer(body["messages"])
        return {"choices": [{"message": {"role": "assistant", "content": content}}]}

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
