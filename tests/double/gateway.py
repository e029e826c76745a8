"""The gateway half of the Discord double: one websocket endpoint, JSON text frames.

Implements what discord.py's ``DiscordWebSocket`` needs: HELLO, heartbeat ACKs,
IDENTIFY -> READY + GUILD_CREATE, RESUME -> replay + RESUMED, member chunk
requests, and dispatch of events with sequence numbers. Sessions outlive
connections, so a client that is cut off can resume and receive what it missed,
and a new client (a restarted bot) can identify against the same world.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

if TYPE_CHECKING:
    from .server import DiscordDouble

log = logging.getLogger(__name__)

OP_DISPATCH = 0
OP_HEARTBEAT = 1
OP_IDENTIFY = 2
OP_PRESENCE_UPDATE = 3
OP_VOICE_STATE_UPDATE = 4
OP_RESUME = 6
OP_RECONNECT = 7
OP_REQUEST_GUILD_MEMBERS = 8
OP_INVALID_SESSION = 9
OP_HELLO = 10
OP_HEARTBEAT_ACK = 11

INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15

# Events kept per session for RESUME replays.
REPLAY_LIMIT = 2000


class GatewayConnection:
    """One websocket. Sends are serialised so frames never interleave."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.lock = asyncio.Lock()
        self.session: GatewaySession | None = None
        self.closed_by_server = False

    @property
    def open(self) -> bool:
        return not self.ws.closed

    async def send(self, frame: dict[str, Any]) -> None:
        async with self.lock:
            if self.ws.closed:
                return
            try:
                await self.ws.send_str(json.dumps(frame))
            except (ConnectionError, RuntimeError):
                log.debug("gateway send failed: socket closed")


@dataclass(eq=False)
class GatewaySession:
    session_id: str
    intents: int
    shard: list[int] | None
    seq: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    connection: GatewayConnection | None = None
    invalidated: bool = False

    @property
    def connected(self) -> bool:
        return self.connection is not None and self.connection.open

    def __repr__(self) -> str:
        state = "invalidated" if self.invalidated else "connected" if self.connected else "idle"
        return f"<GatewaySession {self.session_id[:8]} seq={self.seq} {state}>"


class Gateway:
    """Owned by a :class:`DiscordDouble`; serves its websocket route."""

    def __init__(self, double: DiscordDouble, heartbeat_interval: int = 41250) -> None:
        self.double = double
        self.heartbeat_interval = heartbeat_interval
        self.sessions: dict[str, GatewaySession] = {}
        self.current: GatewaySession | None = None
        self.connections: list[GatewayConnection] = []
        self.ready_count = 0  # READY events sent (one per IDENTIFY)
        self.resume_count = 0  # RESUMED events sent
        self.identifies: list[dict[str, Any]] = []  # IDENTIFY payloads (token removed)
        # While True, new websockets are turned away (503 instead of the upgrade), as a
        # gateway that is down answers.
        self.refusing = False

    # ------------------------------------------------------------------ state

    @property
    def connected(self) -> bool:
        """A client is connected and its session is READY (or RESUMED)."""
        return self.current is not None and self.current.connected

    async def dispatch(self, event: str, data: dict[str, Any], *, required: bool = True) -> bool:
        """Send a dispatch to the current session; returns whether it was delivered.

        With the client cut off (but its session resumable) the event is kept for
        the RESUME replay, as Discord does. With no session at all it raises when
        ``required`` and is dropped otherwise.
        """
        session = self.current
        if session is None or session.invalidated:
            if required:
                raise RuntimeError(
                    f"cannot dispatch {event}: no bot is connected to the gateway "
                    "(start the bot and await double.wait_ready() first)"
                )
            return False
        session.seq += 1
        frame = {"op": OP_DISPATCH, "t": event, "s": session.seq, "d": data}
        session.events.append(frame)
        if len(session.events) > REPLAY_LIMIT:
            del session.events[: len(session.events) - REPLAY_LIMIT]
        if session.connection is not None and session.connection.open:
            await session.connection.send(frame)
            return True
        return False

    def wants(self, intent: int) -> bool:
        session = self.current
        return session is not None and bool(session.intents & intent)

    async def disconnect(self, code: int = 4000) -> None:
        """Close every open connection; sessions stay resumable for codes 4000-4009."""
        for conn in list(self.connections):
            if conn.open:
                conn.closed_by_server = True
                if code in (4004, 4010, 4011, 4012, 4013, 4014) and conn.session:
                    conn.session.invalidated = True
                await conn.ws.close(code=code, message=b"closed by the test double")

    async def close(self) -> None:
        for conn in list(self.connections):
            if conn.open:
                conn.closed_by_server = True
                await conn.ws.close(code=1001, message=b"double shutting down")

    # ------------------------------------------------------------------ websocket

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.refusing:
            return web.Response(status=503, text="the gateway is down (test double)")
        ws = web.WebSocketResponse(max_msg_size=0, autoping=True)
        await ws.prepare(request)
        conn = GatewayConnection(ws)
        self.connections.append(conn)
        self.double._bump()
        await conn.send(
            {
                "op": OP_HELLO,
                "s": None,
                "t": None,
                "d": {"heartbeat_interval": self.heartbeat_interval, "_trace": ["double"]},
            }
        )
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    try:
                        frame = json.loads(msg.data)
                    except ValueError:
                        await ws.close(code=4002, message=b"Error while decoding payload.")
                        break
                    await self._on_frame(conn, frame)
                elif msg.type is WSMsgType.BINARY:
                    await ws.close(code=4002, message=b"Binary frames are not supported.")
                    break
                elif msg.type is WSMsgType.ERROR:
                    break
        finally:
            self._on_closed(conn)
        return ws

    def _on_closed(self, conn: GatewayConnection) -> None:
        if conn in self.connections:
            self.connections.remove(conn)
        session = conn.session
        if session is not None and session.connection is conn:
            session.connection = None
            # When the double cut the connection, the session stays current and
            # events queue up for the client's RESUME. When the client left, it is
            # treated as gone (interactions now fail loudly) but may still RESUME.
            # Close codes cannot tell these apart: discord.py's Client.close() sends
            # 4000, not 1000, because its gateway poll loop closes the socket first.
            if not conn.closed_by_server and self.current is session:
                self.current = None
        self.double._bump()

    async def _on_frame(self, conn: GatewayConnection, frame: dict[str, Any]) -> None:
        op = frame.get("op")
        data = frame.get("d")
        if op == OP_HEARTBEAT:
            await conn.send({"op": OP_HEARTBEAT_ACK, "s": None, "t": None, "d": None})
        elif op == OP_IDENTIFY:
            await self._identify(conn, data or {})
        elif op == OP_RESUME:
            await self._resume(conn, data or {})
        elif op == OP_REQUEST_GUILD_MEMBERS:
            await self._request_members(conn, data or {})
        elif op in (OP_PRESENCE_UPDATE, OP_VOICE_STATE_UPDATE):
            pass
        else:
            log.debug("gateway ignoring op %r", op)

    async def _identify(self, conn: GatewayConnection, data: dict[str, Any]) -> None:
        if data.get("token") != self.double.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        self.identifies.append({k: v for k, v in data.items() if k != "token"})
        session = GatewaySession(
            session_id=secrets.token_hex(16),
            intents=int(data.get("intents", 0)),
            shard=data.get("shard"),
        )
        self.sessions[session.session_id] = session
        session.connection = conn
        conn.session = session
        self.current = session

        double = self.double
        guilds = double.bot_guilds()
        ready: dict[str, Any] = {
            "v": 10,
            "user": {
                **double.bot_user.user_payload(),
                "verified": True,
                "mfa_enabled": False,
                "email": None,
                "flags": 0,
            },
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": double.gateway_url,
            "application": {"id": str(double.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "user_settings": {},
            "auth": {},
            "_trace": ["double"],
        }
        if session.shard is not None:
            ready["shard"] = session.shard
        await self.dispatch("READY", ready)
        for guild in guilds:
            await self.dispatch("GUILD_CREATE", guild.to_dict())
        self.ready_count += 1
        double._bump()

    async def _resume(self, conn: GatewayConnection, data: dict[str, Any]) -> None:
        session = self.sessions.get(str(data.get("session_id")))
        if data.get("token") != self.double.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        if session is None or session.invalidated:
            await conn.send({"op": OP_INVALID_SESSION, "s": None, "t": None, "d": False})
            return
        old = session.connection
        if old is not None and old is not conn and old.open:
            old.closed_by_server = True
            await old.ws.close(code=4000, message=b"session resumed elsewhere")
        session.connection = conn
        conn.session = session
        self.current = session
        last_seen = int(data.get("seq") or 0)
        for frame in list(session.events):
            if frame["s"] > last_seen:
                await conn.send(frame)
        await self.dispatch("RESUMED", {"_trace": ["double"]})
        self.resume_count += 1
        self.double._bump()

    async def _request_members(self, conn: GatewayConnection, data: dict[str, Any]) -> None:
        session = conn.session
        if session is None:
            return
        guild = self.double.guilds.get(int(data.get("guild_id", 0)))
        if guild is None:
            return
        members = list(guild.members)
        user_ids = data.get("user_ids")
        if user_ids:
            wanted = {int(u) for u in ([user_ids] if isinstance(user_ids, str | int) else user_ids)}
            members = [m for m in members if m.id in wanted]
        elif data.get("query"):
            query = str(data["query"]).lower()
            members = [m for m in members if m.name.lower().startswith(query)]
        limit = int(data.get("limit") or 0)
        if limit:
            members = members[:limit]
        chunk: dict[str, Any] = {
            "guild_id": str(guild.id),
            "members": [guild.member_payload(m) for m in members],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        if session is self.current:
            await self.dispatch("GUILD_MEMBERS_CHUNK", chunk)
