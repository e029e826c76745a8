"""Signing in to the gallery with Discord (SPEC §8): the OAuth2 authorization-code grant against
the Discord double, the session cookie, sign-out, and a gallery without sign-in set up."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.double import DiscordDouble
from tests.e2e.conftest import Atelier, rows, running_atelier
from tests.web.conftest import Visitor, gallery_settings, stored_jobs

PAGES = ("/", "/g/dm", "/g/1250000000000000100", "/jobs/abcdefgh", "/jobs/../etc", "/nothing")


def login_query(location: str) -> dict[str, str]:
    query = parse_qs(urlsplit(location).query, keep_blank_values=True)
    assert all(len(values) == 1 for values in query.values()), query
    return {name: values[0] for name, values in query.items()}


def session_cookie(page: Any) -> str:
    (cookie,) = [value for value in page.headers.getall("Set-Cookie", [])
                 if value.startswith("atelier_session=")]
    return str(cookie)


async def test_signed_out_pages_go_to_login_and_pictures_answer_401(
        gallery: Atelier, visitors: Any) -> None:
    (job,) = await stored_jobs(gallery, ["a red fox"], gallery.double.alice)
    ((image,),) = rows(gallery, "SELECT sha256 FROM images WHERE job_id = ?", job)
    stranger = await visitors(None)
    for path in (*PAGES, f"/g/{gallery.double.guild.id}?q=fox", f"/jobs/{job}"):
        page = await stranger.get(path)
        assert page.status == 302, path
        assert page.location.startswith("/login"), (path, page.location)
    assert (await stranger.get(f"/jobs/{job}")).location == f"/login?next=%2Fjobs%2F{job}"
    assert (await stranger.get("/")).location == "/login"
    for path in (f"/images/{image}.png", f"/thumbs/{image}.webp", f"/images/{'0' * 64}.png"):
        page = await stranger.get(path)
        assert page.status == 401, path
        assert page.body == b"Sign in to see this picture."
    assert (await stranger.post(f"/jobs/{job}/favourite", {"index": "1"})).location == "/login"


async def test_login_sends_the_browser_to_discord_with_a_fresh_state(
        gallery: Atelier, visitors: Any) -> None:
    double = gallery.double
    browser = await visitors(None)
    first, second = await browser.get("/login"), await browser.get("/login")
    assert first.status == 302
    assert first.location.startswith(f"{double.oauth_url}?")
    assert "scope=identify+guilds" in first.location
    query = login_query(first.location)
    assert query == {"response_type": "code", "client_id": str(double.application_id),
                     "scope": "identify guilds",
                     "redirect_uri": f"{gallery.settings.public_url}/auth/callback",
                     "state": query["state"]}
    assert len(query["state"]) >= 22  # 128 bits or more
    assert login_query(second.location)["state"] != query["state"]


async def test_sign_in_sets_a_signed_httponly_lax_cookie_and_goes_home(
        gallery: Atelier, visitors: Any) -> None:
    double = gallery.double
    browser = await visitors(None)
    done = await browser.sign_in(double.alice)
    assert done.status == 302 and done.location == "/"
    cookie = session_cookie(done)
    attributes = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in attributes and "samesite=lax" in attributes and "path=/" in attributes
    assert "secure" not in attributes  # http://127.0.0.1: a Secure cookie would never return
    value = cookie.split(";")[0].split("=", 1)[1]
    assert str(double.alice.id) not in value and "alice" not in value.lower()
    home = await browser.get("/")
    assert home.status == 200 and "Alice" in home.text
    # Discord saw exactly the grant a website makes.
    (authorization,) = double.authorizations
    assert authorization["scope"] == "identify guilds"
    token_calls = [r for r in double.requests if r.path == "/oauth2/token"]
    assert [r.status for r in token_calls] == [200]

    # A cookie changed by the browser is no session at all.
    forged = Visitor(gallery)
    try:
        forged.http.cookie_jar.update_cookies({"atelier_session": value[:-4] + "AAAA"})
        assert (await forged.get("/")).location == "/login"
    finally:
        await forged.close()


async def test_sign_in_goes_back_to_the_page_that_asked_for_it(
        gallery: Atelier, visitors: Any) -> None:
    double = gallery.double
    (job,) = await stored_jobs(gallery, ["a red fox"], double.alice)
    browser = await visitors(None)
    asked = await browser.get(f"/jobs/{job}")
    double.oauth_user = double.alice
    login = await browser.get(asked.location)
    back = await browser.get((await browser.get(login.location)).location)
    assert back.location == f"/jobs/{job}"
    # Only ever to a path of this site.
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example",
                   "/\r\nSet-Cookie: x=1"):
        login = await browser.get("/login", params={"next": target})
        back = await browser.get((await browser.get(login.location)).location)
        assert back.location == "/", target


async def test_the_state_belongs_to_the_browser_that_started(gallery: Atelier,
                                                             visitors: Any) -> None:
    double = gallery.double
    double.oauth_user = double.alice
    victim, attacker = await visitors(None), await visitors(None)
    started = await attacker.get("/login")
    callback = (await attacker.get(started.location)).location
    # The attacker's callback link, opened in someone else's browser, signs nobody in.
    refused = await victim.get(callback)
    assert refused.status == 400
    assert "started in another browser" in refused.text
    assert (await victim.get("/")).location == "/login"
    # In the right browser it works once; the same link again does not.
    assert (await attacker.get(callback)).location == "/"
    again = Visitor(gallery)
    try:
        await again.get("/login")
        assert (await again.get(callback)).status == 400
    finally:
        await again.close()
    # A state that was never issued.
    fresh = await visitors(None)
    await fresh.get("/login")
    forged = callback.replace("state=", "state=x")
    assert (await fresh.get(forged)).status == 400


async def test_cancelling_at_discord_signs_nobody_in(gallery: Atelier, visitors: Any) -> None:
    double = gallery.double
    double.oauth_denies = True
    browser = await visitors(None)
    login = await browser.get("/login")
    back = await browser.get((await browser.get(login.location)).location)
    assert back.status == 200 and "Sign-in was cancelled" in back.text
    assert 'href="/login"' in back.text
    assert (await browser.get("/")).location == "/login"


async def test_logout_needs_the_form_token_and_ends_the_session(gallery: Atelier,
                                                                visitors: Any) -> None:
    double = gallery.double
    browser = await visitors(double.alice)
    home = await browser.get("/")
    copied = {cookie.key: cookie.value for cookie in browser.http.cookie_jar}
    assert (await browser.post("/logout", {})).status == 403
    assert (await browser.post("/logout", {"csrf": "wrong"})).status == 403
    assert (await browser.get("/")).status == 200  # still signed in

    out = await browser.post("/logout", {"csrf": home.csrf()})
    assert out.status == 303 and out.location == "/signed-out"
    assert "Max-Age=0" in session_cookie(out) or "expires=" in session_cookie(out).lower()
    page = await browser.get("/signed-out")
    assert page.status == 200 and "signed out" in page.text
    assert (await browser.get("/")).location == "/login"
    # A copy of the cookie from before is refused too: its Discord token was revoked.
    replay = Visitor(gallery)
    try:
        replay.http.cookie_jar.update_cookies(copied)
        assert (await replay.get("/")).location == "/login"
    finally:
        await replay.close()
    assert any(r.path == "/oauth2/token/revoke" and r.status == 200 for r in double.requests)


async def test_the_guild_list_is_at_most_ten_minutes_old(gallery: Atelier,
                                                         visitors: Any) -> None:
    double = gallery.double
    assert gallery.bot is not None
    web = gallery.bot.gallery
    now = [1000.0]
    web.clock = lambda: now[0]
    browser = await visitors(double.alice)
    where = f"/g/{double.guild.id}"

    def guild_lists() -> int:
        return sum(r.path == "/users/@me/guilds" for r in double.requests)

    assert guild_lists() == 1  # read at sign-in
    for _ in range(3):
        assert (await browser.get(where)).status == 200
    assert guild_lists() == 1
    double.leave(double.guild, double.alice)
    now[0] += 599
    assert f'href="{where}"' in (await browser.get("/")).text  # still trusted
    assert guild_lists() == 1
    now[0] += 2
    page = await browser.get("/")
    assert guild_lists() == 2
    assert f'href="{where}"' not in page.text
    assert (await browser.get(where)).status == 404

    # A person who removed the application in Discord is signed out at the next reading.
    double.revoke_oauth(double.alice)
    now[0] += 601
    assert (await browser.get("/")).location == "/login"


async def test_an_expired_access_token_is_renewed(gallery: Atelier, visitors: Any) -> None:
    double = gallery.double
    double.oauth_expires_in = 30  # renewed when less than a minute is left: at once
    browser = await visitors(double.alice)
    double.expire_oauth_access(double.alice)
    assert (await browser.get("/")).status == 200
    grants = [r for r in double.requests if r.path == "/oauth2/token"]
    assert [r.status for r in grants] == [200, 200]  # the code, then the refresh token
    assert sum(r.path == "/users/@me/guilds" and r.status == 200 for r in double.requests) == 1


async def test_discord_down_at_sign_in_is_said_plainly(gallery: Atelier,
                                                       visitors: Any) -> None:
    double = gallery.double
    double.fail("POST", r"^/oauth2/token$", status=500, times=10)
    double.oauth_user = double.alice
    browser = await visitors(None)
    login = await browser.get("/login")
    back = await browser.get((await browser.get(login.location)).location)
    assert back.status == 502
    assert "Discord did not complete the sign-in" in back.text
    assert "500" not in back.text and "oauth2" not in back.text  # nothing raw


async def test_a_wrong_client_secret_is_the_operators_to_fix(
        gallery: Atelier, visitors: Any, caplog: pytest.LogCaptureFixture) -> None:
    double = gallery.double
    double.client_secret = "rotated in the developer portal"
    double.oauth_user = double.alice
    browser = await visitors(None)
    login = await browser.get("/login")
    back = await browser.get((await browser.get(login.location)).location)
    assert back.status == 502 and "Discord did not complete the sign-in" in back.text
    assert "check DISCORD_CLIENT_SECRET" in caplog.text


async def test_without_a_client_secret_the_gallery_says_how_to_enable_sign_in(
        discord_double: DiscordDouble, data_dir: Path) -> None:
    settings = gallery_settings(discord_double, data_dir, discord_client_secret=None)
    async with running_atelier(discord_double, settings) as atelier:
        browser = Visitor(atelier)
        try:
            for path in ("/", "/login", "/auth/callback?code=x&state=y", "/g/dm"):
                page = await browser.get(path)
                assert page.status == 503, path
                assert "Sign-in is not set up" in page.text
                assert "DISCORD_CLIENT_SECRET" in page.text
                assert f"{settings.public_url}/auth/callback" in page.text
            assert (await browser.get(f"/images/{'0' * 64}.png")).status == 401
        finally:
            await browser.close()
    assert not discord_double.authorizations


async def test_under_https_the_cookie_is_secure(discord_double: DiscordDouble,
                                                data_dir: Path) -> None:
    settings = gallery_settings(discord_double, data_dir,
                                public_url="https://gallery.example")
    async with running_atelier(discord_double, settings) as atelier:
        browser = Visitor(atelier)
        browser.base = f"http://127.0.0.1:{settings.web_port}"  # the reverse proxy's side
        try:
            discord_double.oauth_user = discord_double.alice
            login = await browser.get("/login")
            assert login_query(login.location)["redirect_uri"] == (
                "https://gallery.example/auth/callback")
            started = session_cookie(login)
            assert "secure" in [part.strip().lower() for part in started.split(";")]
            callback = (await browser.get(login.location)).location
            assert callback.startswith("https://gallery.example/auth/callback?")
            # The browser sends its Secure cookie to the proxy, which passes it on.
            done = await browser.get(callback.replace("https://gallery.example", browser.base),
                                     headers={"Cookie": started.split(";")[0]})
            assert done.location == "/"
            assert "secure" in [part.strip().lower() for part in session_cookie(done).split(";")]
        finally:
            await browser.close()


async def test_the_start_up_log_gives_the_address_and_the_gallery_stops_with_the_bot(
        discord_double: DiscordDouble, data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = gallery_settings(discord_double, data_dir)
    caplog.set_level(logging.INFO, logger="web")
    async with running_atelier(discord_double, settings):
        pass
    assert (f"gallery at {settings.public_url} (listening on 127.0.0.1:{settings.web_port})"
            in caplog.text)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(
            ("127.0.0.1", settings.web_port), timeout=2):
        pass


async def test_a_busy_port_leaves_the_bot_running_without_the_gallery(
        discord_double: DiscordDouble, data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = gallery_settings(discord_double, data_dir, web_port=port)
        async with running_atelier(discord_double, settings) as atelier:
            handle = await atelier.imagine("a red fox --n 1")
            await handle.response()
        assert f"the gallery cannot listen on 127.0.0.1:{port}" in caplog.text
        assert "set WEB_PORT to a free port, or 0" in caplog.text
