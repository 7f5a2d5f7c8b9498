"""Host allowlist (DNS rebinding), the Origin check on unsafe cookie requests (CSRF),
security headers, CORS and trusted networks."""

from __future__ import annotations

import logging
import re

import pyotp
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.security.conftest import BASE, PASSWORD, SETUP_TOKEN, USERNAME, MakeClient, login

HEADERS = {
    "content-security-policy": "default-src 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


@pytest.mark.parametrize("host", ["evil.example", "evil.example:3001", "localhost.evil.example"])
def test_an_unknown_host_name_is_refused(make_client: MakeClient, host: str) -> None:
    client = make_client()
    response = client.get("/health/live", headers={"host": host})
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_HOST"


@pytest.mark.parametrize(
    "host", ["localhost:3001", "127.0.0.1:3001", "[::1]:3001", "192.168.1.20:3001", "code.lan"]
)
def test_local_names_addresses_and_configured_hosts_are_served(
    make_client: MakeClient, host: str
) -> None:
    client = make_client(allowed_hosts=["code.lan"])
    assert client.get("/health/live", headers={"host": host}).status_code == 200


@pytest.mark.usefixtures("owner")
def test_unsafe_cookie_requests_need_a_same_origin_proof(make_client: MakeClient) -> None:
    client = make_client()
    assert login(client).status_code == 200
    url = "/api/auth/tokens"
    body = {"name": "t"}

    for headers in (
        {"origin": "https://evil.example"},
        {"origin": "http://localhost.evil.example"},
        {"origin": "null"},
        {"origin": BASE, "sec-fetch-site": "cross-site"},
        {"origin": "", "sec-fetch-site": "same-site"},
        {"origin": "http://[x"},  # not even a URL (urlsplit refuses it)
        {"origin": "http://[::1"},
    ):
        response = client.post(url, json=body, headers=headers)
        assert response.status_code == 403, headers
        assert response.json()["code"] == "CROSS_ORIGIN"

    no_proof = make_client(headers={})
    no_proof.cookies.update(client.cookies)
    response = no_proof.post(url, json=body)
    assert response.status_code == 403
    assert response.json()["code"] == "ORIGIN_REQUIRED"
    assert no_proof.get(url).status_code == 200  # safe methods need no proof

    assert (
        no_proof.post(url, json=body, headers={"sec-fetch-site": "same-origin"}).status_code == 201
    )
    assert no_proof.post(url, json=body, headers={"origin": BASE}).status_code == 201
    # On a safe method a malformed Origin is answered as usual, on a stream refused.
    assert no_proof.get("/health/live", headers={"origin": "http://[x"}).status_code == 200
    stream = no_proof.get("/api/events", headers={"origin": "http://[x"})
    assert (stream.status_code, stream.json()["code"]) == (403, "FORBIDDEN")


@pytest.mark.usefixtures("owner")
def test_a_login_from_another_site_is_refused(make_client: MakeClient) -> None:
    client = make_client(headers={"origin": "https://evil.example"})
    assert login(client).status_code == 403


@pytest.mark.usefixtures("owner")
def test_security_headers_on_every_kind_of_response(make_client: MakeClient) -> None:
    client = make_client()
    login(client)
    anonymous = make_client()
    responses = [
        client.get("/"),
        client.get("/api/auth/me"),
        client.get("/api/no-such-route"),
        anonymous.get("/api/auth/me"),
        anonymous.get("/", headers={"host": "evil.example"}),
        client.post(
            "/api/auth/tokens", json={"name": "x"}, headers={"origin": "https://e.example"}
        ),
    ]
    assert [r.status_code for r in responses] == [200, 200, 404, 401, 400, 403]
    for response in responses:
        for name, value in HEADERS.items():
            assert value in response.headers[name], (response.request.url, name)
    assert client.get("/api/auth/me").headers["cache-control"] == "no-store"


@pytest.mark.usefixtures("owner")
def test_an_unexpected_error_keeps_the_error_shape_and_the_headers(make_client: MakeClient) -> None:
    """No request of a client should reach a bug, and the tests look for those that do
    (schemathesis, the traversal corpus); should one still be reached, the answer is the API's
    error shape with the security headers and without the exception's text."""
    client = make_client()
    assert login(client).status_code == 200

    async def broken() -> None:
        raise RuntimeError("bug-canary-77d1")

    app: FastAPI = client.app  # type: ignore[assignment]
    app.add_api_route("/api/broken", broken)
    quiet = TestClient(app, base_url=BASE, headers={"origin": BASE}, raise_server_exceptions=False)
    quiet.cookies.update(client.cookies)
    response = quiet.get("/api/broken")
    assert response.status_code == 500
    assert response.json() == {
        "error": "internal error: see the server's log",
        "code": "INTERNAL_ERROR",
        "statusCode": 500,
    }
    assert "bug-canary-77d1" not in response.text
    for name, value in HEADERS.items():
        assert value in response.headers[name], name
    assert response.headers["cache-control"] == "no-store"


def test_cors_is_off_unless_configured(make_client: MakeClient) -> None:
    preflight = {
        "origin": "https://app.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization",
    }
    closed = make_client(headers={})
    response = closed.options("/api/auth/me", headers=preflight)
    assert "access-control-allow-origin" not in response.headers

    opened = make_client(headers={}, cors_origins=["https://app.example"])
    response = opened.options("/api/auth/me", headers=preflight)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://app.example"


def test_trusted_networks_act_as_the_owner_without_credentials(
    make_client: MakeClient, owner: str
) -> None:
    vpn = make_client(trusted_networks=["100.64.0.0/10"], client=("100.100.1.2", 4000))
    me = vpn.get("/api/auth/me", headers={})
    assert me.status_code == 200
    assert me.json()["authMethod"] == "trusted-network"
    assert me.json()["user"]["id"] == owner
    # …but cannot manage the account, nor be driven by another site.
    assert vpn.get("/api/auth/tokens").json()["code"] == "FORBIDDEN"
    evil = vpn.post("/api/auth/logout", headers={"origin": "https://evil.example"})
    assert evil.status_code == 403

    outside = make_client(trusted_networks=["100.64.0.0/10"], client=("203.0.113.9", 4000))
    assert outside.get("/api/auth/me").status_code == 401
    assert make_client(client=("100.100.1.2", 4000)).get("/api/auth/me").status_code == 401


# --- canaries: secrets never leak into responses or logs -------------------------------------


def test_secrets_never_appear_in_responses_or_logs(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client()
    texts: list[str] = []

    def keep(response: object) -> object:
        texts.append(str(getattr(response, "headers", "")) + getattr(response, "text", ""))
        return response

    setup = client.post(
        "/api/auth/setup", json={"token": SETUP_TOKEN, "username": USERNAME, "password": PASSWORD}
    )
    assert setup.status_code == 201
    keep(setup)
    keep(client.get("/api/auth/me"))
    keep(client.get("/api/auth/status"))
    created = client.post("/api/auth/tokens", json={"name": "canary"})
    api_token = created.json()["token"]
    keep(client.get("/api/auth/tokens"))
    enrolled = client.post("/api/auth/totp/enroll").json()
    secret = enrolled["secret"]
    code = pyotp.TOTP(secret).now()
    confirmed = client.post("/api/auth/totp/confirm", json={"code": code})
    recovery = confirmed.json()["recoveryCodes"]
    keep(client.get("/api/auth/me", headers={"authorization": f"Bearer {api_token}"}))
    other = make_client()
    keep(login(other, "wrong-password-canary"))
    keep(login(other, recoveryCode=recovery[0]))
    keep(client.post("/api/auth/password", json={"currentPassword": PASSWORD, "newPassword": "x"}))
    keep(client.get("/api/auth/me"))

    logged = "\n".join(record.getMessage() + repr(record.args) for record in caplog.records)
    session_cookie = client.cookies["pocketcode_session"]
    secrets = [PASSWORD, "wrong-password-canary", SETUP_TOKEN, api_token, secret, code]
    for canary in [*secrets, recovery[0], session_cookie]:
        assert canary not in logged
    # Only the one-time answers carry them: the token creation, the enrolment, the recovery
    # codes (and the cookie in Set-Cookie, which none of the kept responses sets again).
    for canary in [*secrets, recovery[0]]:
        assert not any(canary in text for text in texts), canary
    assert secret not in confirmed.text
    assert api_token not in client.get("/api/auth/tokens").text


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("trusted_networks", "0.0.0.0/0", "every address"),
        ("trusted_networks", "not-a-cidr", "not a CIDR"),
        ("allowed_hosts", "http://x.example", "not a host name"),
        ("cors_origins", "app.example", "not an http(s) URL"),
        ("public_url", "ftp://x", "not an http(s) URL"),
    ],
)
def test_security_settings_are_validated(name: str, value: str, message: str) -> None:
    from pocketcode.config import load_settings
    from pocketcode.domain.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=re.escape(message)):
        load_settings(**{name: value})


def test_security_settings_parse_comma_lists() -> None:
    from pocketcode.config import load_settings

    settings = load_settings(
        trusted_networks="100.64.0.0/10, fd7a:115c:a1e0::/48", allowed_hosts="Box.Tailnet.ts.net"
    )
    assert settings.trusted_networks == ["100.64.0.0/10", "fd7a:115c:a1e0::/48"]
    assert settings.allowed_hosts == ["box.tailnet.ts.net"]
