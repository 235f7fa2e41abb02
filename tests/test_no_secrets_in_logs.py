"""No token or secret ever reaches a log line or an error response.

Real processes log JSON at DEBUG: ``relay serve``, ``relay worker``, ``relay simulate`` (the
Clever stand-in) and ``relay listen`` (a verifying receiver), plus a failing receiver in this
process. The run goes through every path that handles a secret: a district created with a
Clever token, service tokens minted (one revoked), subscriptions created with a supplied and a
generated secret, rotate-secret, deliveries that succeed and that fail, Clever rotating the
district's token so the worker gets a 401 and refreshes it with the client credentials, the
``/ui`` sign-in (good and bad token) and sign-out, and API errors provoked with secrets in the
request. Then every log line and every provoked error response is searched for every value.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.db.crypto import generate_key
from relay.settings import Settings
from tests.support.processes import RelayProcess
from tests.support.receiver import Receiver
from tests.support.servers import free_port, serve

DEBUG = ["--log-level", "DEBUG"]


def _whsec() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _wait(condition: Callable[[], bool], what: str, timeout: float = 45) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _up(url: str, process: RelayProcess) -> Callable[[], bool]:
    def check() -> bool:
        assert process.proc.poll() is None, process.output()[-3000:]
        try:
            return httpx.get(url, timeout=2).status_code < 500
        except httpx.TransportError:
            return False

    return check


def _variants(value: str) -> set[str]:
    """The value and the parts of it a careless log line might carry on its own."""
    out = {value}
    for prefix in ("whsec_", "rst_", "rat_"):
        if value.startswith(prefix):
            out.add(value.removeprefix(prefix))
    if value.startswith("whsec_"):
        raw = base64.b64decode(value.removeprefix("whsec_"))
        out |= {raw.hex(), base64.urlsafe_b64encode(raw).decode().rstrip("=")}
    return {v for v in out if len(v) >= 12}


@pytest.fixture
def processes() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


async def test_no_secret_or_token_reaches_a_log_or_an_error_response(
    settings: Settings, redis_url: str, tmp_path: Path, processes: ExitStack
) -> None:
    admin_token = "rat_" + secrets.token_urlsafe(32)
    secret_key = secrets.token_urlsafe(48)
    encryption_key = generate_key()
    client_id = "cid-" + secrets.token_hex(6)
    client_secret = "cs-" + secrets.token_urlsafe(24)
    logs = tmp_path / "logs"
    logs.mkdir()

    def start(name: str, args: list[str], env: dict[str, str]) -> RelayProcess:
        process = RelayProcess([*DEBUG, *args], env, logs / f"{name}.log")
        processes.callback(process.stop)
        return process

    # Clever: the simulator, its own process
    sim_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    sim = start(
        "simulate",
        [
            "simulate",
            "--port",
            str(sim_port),
            "--districts",
            "1",
            "--backlog",
            "8",
            "--rate",
            "0",  # only the events this test makes: it counts them
            "--seed",
            str(secrets.randbelow(10_000)),
            "--client-id",
            client_id,
            "--client-secret",
            client_secret,
        ],
        {},
    )
    _wait(_up(sim_url + "/_sim/state", sim), "the simulator")
    district = httpx.get(sim_url + "/_sim/state").json()["districts"][0]
    district_id, old_clever_token = district["id"], district["token"]

    env = {
        "RELAY_DATABASE_URL": settings.database_url,
        "RELAY_REDIS_URL": redis_url,
        "RELAY_ADMIN_TOKEN": admin_token,
        "RELAY_SECRET_KEY": secret_key,
        "RELAY_ENCRYPTION_KEY": encryption_key,
        "RELAY_DATA_DIR": str(tmp_path / "data"),
        "RELAY_CLEVER_API_URL": sim_url,
        "RELAY_CLEVER_OAUTH_URL": sim_url,
        "CLEVER_CLIENT_ID": client_id,
        "CLEVER_CLIENT_SECRET": client_secret,
        "RELAY_POLL_INTERVAL": "0.2",
        "RELAY_POLL_LEASE": "3",
        "RELAY_RETRY_SCHEDULE": "0.2,0.2",
        "RELAY_DELIVERY_TIMEOUT": "2",
        "RELAY_RECONCILE_INTERVAL": "2",
    }
    api_port = free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    serve_proc = start("serve", ["serve", "--port", str(api_port)], env)
    _wait(_up(api_url + "/healthz", serve_proc), "relay serve")

    provoked: list[httpx.Response] = []
    admin = httpx.Client(
        base_url=api_url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=10
    )
    processes.callback(admin.close)

    # a district with a Clever token (before the worker starts: discovery then finds it known)
    created = admin.post(
        "/v1/districts",
        json={"id": district_id, "token": old_clever_token, "start_from": "earliest"},
    )
    assert created.status_code == 201, created.text
    assert old_clever_token not in created.text

    # service tokens: one used, one revoked
    svc_token = admin.post("/v1/tokens", json={"owner": "svc"}).json()["token"]
    revoked_token = admin.post("/v1/tokens", json={"owner": "gone"}).json()["token"]
    assert admin.delete("/v1/tokens/gone").status_code in (200, 204)
    svc = httpx.Client(
        base_url=api_url, headers={"Authorization": f"Bearer {svc_token}"}, timeout=10
    )
    processes.callback(svc.close)

    # receivers: `relay listen` verifying the supplied secret, and one that always fails
    supplied_secret = _whsec()
    listen_port = free_port()
    listen = start(
        "listen",
        ["listen", "--port", str(listen_port), "--secret", supplied_secret],
        {"RELAY_DATA_DIR": str(tmp_path / "listen-data")},
    )
    failing = Receiver(responder=lambda n: (500, {}, 0.0))
    failing_srv = processes.enter_context(serve(failing.app()))
    time.sleep(0.5)
    assert listen.proc.poll() is None, listen.output()

    good = svc.post(
        "/v1/subscriptions",
        json={"url": f"http://127.0.0.1:{listen_port}/hook", "secret": supplied_secret},
    )
    assert good.status_code == 201, good.text
    bad = svc.post("/v1/subscriptions", json={"url": failing_srv.url + "/fail"})
    assert bad.status_code == 201, bad.text
    good_id, bad_id = good.json()["id"], bad.json()["id"]
    generated_secret = bad.json()["secret"]

    worker = start("worker", ["worker"], env)

    def deliveries(sub: str, status: str) -> int:
        response = admin.get(
            "/v1/deliveries", params={"subscription_id": sub, "status": status, "limit": 500}
        )
        assert response.status_code == 200, response.text
        return len(response.json()["data"])

    _wait(lambda: deliveries(good_id, "succeeded") >= 8, "deliveries to relay listen")
    _wait(lambda: deliveries(bad_id, "failed") >= 1, "a failed delivery")
    assert worker.proc.poll() is None, worker.output()[-3000:]

    # rotate both signing secrets; later deliveries are signed with old and new
    rotated = svc.post(f"/v1/subscriptions/{good_id}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    rotated_secret = rotated.json()["secret"]
    rotated_bad = svc.post(f"/v1/subscriptions/{bad_id}/rotate-secret").json()["secret"]
    assert svc.post(f"/v1/subscriptions/{good_id}/test").status_code == 200

    # Clever rotates the district token: the worker gets a 401 and refreshes it
    new_clever_token = httpx.post(f"{sim_url}/_sim/districts/{district_id}/rotate-token").json()[
        "token"
    ]
    added = httpx.post(
        f"{sim_url}/_sim/districts/{district_id}/events", json={"generate": 4}
    ).json()
    assert added["count"] == 4
    # 8 + the relay.test (in the delivery log) + the 4 new events
    _wait(lambda: deliveries(good_id, "succeeded") >= 13, "deliveries after the token refresh")
    assert "district token refreshed after a 401" in worker.output()
    shown = admin.get(f"/v1/districts/{district_id}").json()
    assert shown["status"] == "active", shown
    assert new_clever_token not in json.dumps(shown)

    # /ui: a bad sign-in, a good one, a page, sign-out
    wrong_token = "rst_" + secrets.token_urlsafe(30)
    with httpx.Client(base_url=api_url, headers={"Origin": api_url}, timeout=10) as browser:
        provoked.append(browser.post("/ui/login", data={"token": wrong_token}))
        provoked.append(browser.post("/ui/login", data={"token": revoked_token}))
        signed_in = browser.post("/ui/login", data={"token": svc_token})
        assert signed_in.status_code == 303, signed_in.text
        session_cookie = browser.cookies["relay_ui_session"]
        page = browser.get("/ui")
        assert "Signed in as service svc" in page.text
        assert bad_id in page.text
        provoked.append(page)
        assert browser.post("/ui/logout").status_code == 303

    # API errors provoked with secrets in the request
    def call(client: httpx.Client, method: str, url: str, **kwargs: Any) -> None:
        response = client.request(method, url, **kwargs)
        assert response.status_code >= 400, (method, url, response.text)
        provoked.append(response)

    with httpx.Client(base_url=api_url, timeout=10) as anon:
        for token in (admin_token + "x", wrong_token, revoked_token, "x" + svc_token):
            call(anon, "GET", "/v1/subscriptions", headers={"Authorization": f"Bearer {token}"})
        call(anon, "GET", "/v1/subscriptions", headers={"Authorization": admin_token})
    call(admin, "POST", "/v1/districts", json={"id": district_id, "token": new_clever_token})
    call(admin, "POST", "/v1/districts", json={"id": "bad id!", "token": new_clever_token})
    call(admin, "POST", "/v1/districts", json={"id": "d9", "token": new_clever_token, "x": 1})
    call(admin, "PATCH", f"/v1/districts/{district_id}", json={"token": 5, "n": new_clever_token})
    call(svc, "POST", "/v1/districts", json={"id": "d9", "token": new_clever_token})
    call(svc, "POST", "/v1/tokens", json={"owner": "svc"})
    call(svc, "POST", "/v1/subscriptions", json={"url": "not a url", "secret": supplied_secret})
    call(
        svc,
        "POST",
        "/v1/subscriptions",
        json={"url": failing_srv.url, "secret": supplied_secret, "owner": "someone-else"},
    )
    call(
        svc,
        "POST",
        "/v1/subscriptions",
        content=f'{{"url": "{failing_srv.url}", "secret": "{rotated_secret}"',
        headers={"content-type": "application/json"},
    )
    # PATCH takes a new secret; one that is not a whsec_ secret is refused without echoing it
    call(svc, "PATCH", f"/v1/subscriptions/{good_id}", json={"secret": rotated_secret + "!"})

    for process in (worker, serve_proc, listen, sim):
        process.stop()

    relay_secrets = {
        "admin token": admin_token,
        "secret key": secret_key,
        "encryption key": encryption_key,
        "service token": svc_token,
        "revoked service token": revoked_token,
        "wrong token tried": wrong_token,
        "supplied subscription secret": supplied_secret,
        "rotated subscription secret": rotated_secret,
        "generated subscription secret": generated_secret,
        "rotated generated secret": rotated_bad,
        "ui session cookie": session_cookie,
    }
    clever_secrets = {
        "Clever district token (old)": old_clever_token,
        "Clever district token (new)": new_clever_token,
        "Clever client secret": client_secret,
    }
    # the simulator is Clever: it knows Clever's credentials, but never the relay's
    checks = {
        "serve": relay_secrets | clever_secrets,
        "worker": relay_secrets | clever_secrets,
        "listen": relay_secrets | clever_secrets,
        "simulate": relay_secrets,
    }
    leaks = []
    lines_checked = 0
    for name, values in checks.items():
        text = (logs / f"{name}.log").read_text(errors="replace")
        lines = text.splitlines()
        lines_checked += len(lines)
        if name in ("serve", "worker"):
            parsed = [json.loads(line) for line in lines if line.startswith("{")]
            assert parsed, f"{name} wrote no JSON log lines"
            assert len(parsed) == len(lines), f"{name}: non-JSON output: {text[:2000]}"
        for label, value in values.items():
            for variant in _variants(value):
                for line in lines:
                    if variant in line:
                        leaks.append(f"{name}.log: {label}: {line[:300]}")
    assert lines_checked > 50
    assert "delivery attempt" in (logs / "worker.log").read_text()
    worker_lines = (logs / "worker.log").read_text().splitlines()
    assert "debug" in {json.loads(line)["level"] for line in worker_lines}  # DEBUG was on

    every = relay_secrets | clever_secrets
    for response in provoked:
        body = response.text + json.dumps(dict(response.headers))
        for label, value in every.items():
            if label == "ui session cookie":
                continue  # the sign-in response sets it, by design
            for variant in _variants(value):
                if variant in body:
                    leaks.append(
                        f"{response.request.method} {response.request.url.path} "
                        f"{response.status_code}: {label}: {response.text[:300]}"
                    )
    assert not leaks, "\n".join(leaks)
