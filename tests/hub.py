"""A Hugging Face hub double: serves a local diffusers folder as a hub repository over HTTP on
127.0.0.1, with what `huggingface_hub.snapshot_download` asks for (the repository's files and
tree, each file's metadata and content), so a model is downloaded the real way in tests.

A file can be held back (`hold`) after its first bytes, until the test releases it: a download
then stays part-way for as long as the test needs to look at what users see meanwhile."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

COMMIT = "5" * 40
HELD_AFTER = 64 * 1024  # bytes of a held file sent before it waits


class HubDouble:
    def __init__(self, repo_id: str, folder: Path) -> None:
        self.repo_id = repo_id
        self.files = {path.relative_to(folder).as_posix(): path
                      for path in sorted(folder.rglob("*")) if path.is_file()}
        self.held: dict[str, threading.Event] = {}
        self.requests: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        for gate in self.held.values():
            gate.set()
        self._server.shutdown()
        self._server.server_close()

    def hold(self, name: str) -> threading.Event:
        """Hold `name` back after its first bytes until the returned event is set."""
        gate = self.held[name] = threading.Event()
        return gate

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                hub.requests.append(f"{self.command} {self.path}")

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                api = f"/api/models/{hub.repo_id}"
                path = self.path.split("?")[0]
                if path.startswith(f"{api}/tree/"):
                    self._json([{"type": "file", "path": name, "size": file.stat().st_size,
                                 "oid": hashlib.sha1(file.read_bytes()).hexdigest()}
                                for name, file in hub.files.items()])
                elif path.startswith(api):
                    self._json({"id": hub.repo_id, "modelId": hub.repo_id, "sha": COMMIT,
                                "siblings": [{"rfilename": name} for name in hub.files]})
                elif path.startswith(f"/{hub.repo_id}/resolve/"):
                    name = path.removeprefix(f"/{hub.repo_id}/resolve/").split("/", 1)[1]
                    self._file(name, body)
                else:
                    self._missing("RepoNotFound")

            def _json(self, payload: object) -> None:
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _missing(self, code: str) -> None:
                self.send_response(404)
                self.send_header("X-Error-Code", code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _file(self, name: str, body: bool) -> None:
                file = hub.files.get(name)
                if file is None:
                    self._missing("EntryNotFound")
                    return
                data = file.read_bytes()
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not body:
                    return
                gate = hub.held.get(name)
                if gate is not None:
                    self.wfile.write(data[:HELD_AFTER])
                    self.wfile.flush()
                    gate.wait(120)
                    data = data[HELD_AFTER:]
                self.wfile.write(data)

        return Handler


@pytest.fixture
def hub_double(tiny_model_dir: Path, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[HubDouble]:
    """The tiny model as the hub repository `atelier/tiny`, with huggingface_hub pointed at it
    (online, an empty cache) for this test."""
    import huggingface_hub.constants as constants
    import huggingface_hub.hf_api as hf_api

    hub = HubDouble("atelier/tiny", tiny_model_dir)
    hub.start()
    cache = tmp_path / "hub-cache"
    monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hf_api.api, "endpoint", hub.endpoint)  # made when it was imported
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    try:
        yield hub
    finally:
        hub.close()
