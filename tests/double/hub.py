"""A loopback Hugging Face hub: the model-info route (`HfApi.model_info`) that tells whether a
repository exists and how large its files are. A process finds it through `HF_ENDPOINT`."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


class HubDouble:
    """`models` maps a repo id to its files and their sizes; any other id is not found, as the
    hub answers for a repository that does not exist (or that it will not show)."""

    def __init__(self, models: dict[str, dict[str, int]] | None = None) -> None:
        self.models = dict(models or {})
        self.asked: list[str] = []  # repo ids asked about, in order
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> HubDouble:
        app = web.Application()
        app.router.add_get("/api/models/{repo:.+}", self._model_info)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _model_info(self, request: web.Request) -> web.Response:
        repo = request.match_info["repo"].split("/revision/")[0]
        self.asked.append(repo)
        files = self.models.get(repo)
        if files is None:
            return web.Response(
                status=404, body=json.dumps({"error": "Repository not found"}).encode(),
                content_type="application/json",
                headers={"X-Error-Code": "RepoNotFound",
                         "X-Error-Message": "Repository not found"})
        with_sizes = request.query.get("blobs", "").lower() in ("1", "true")
        siblings: list[dict[str, Any]] = [
            {"rfilename": name, **({"size": size} if with_sizes else {})}
            for name, size in files.items()
        ]
        body = {"id": repo, "modelId": repo, "private": False, "gated": False,
                "siblings": siblings, "tags": ["diffusers"]}
        return web.Response(body=json.dumps(body).encode(), content_type="application/json")
