from __future__ import annotations

import httpx
from standardwebhooks.webhooks import Webhook

from tests.support.api import service_client
from tests.support.receiver import Receiver
from tests.support.servers import free_port, serve


def test_test_event_is_signed_and_reported(admin: httpx.Client) -> None:
    receiver = Receiver()
    with serve(receiver.app()) as target:
        sub = admin.post("/v1/subscriptions", json={"url": target.url + "/hook"}).json()
        response = admin.post(f"/v1/subscriptions/{sub['id']}/test")
        assert response.status_code == 200
        attempt = response.json()
        assert attempt["succeeded"] is True
        assert attempt["status_code"] == 204
        payload = receiver.verified(sub["secret"])[0]
        assert payload["type"] == "relay.test"
        assert payload["id"] == attempt["webhook_id"]

        rotated = admin.post(f"/v1/subscriptions/{sub['id']}/rotate-secret").json()
        assert admin.post(f"/v1/subscriptions/{sub['id']}/test").json()["succeeded"]
        last = receiver.received[-1]
        # during the 24 h overlap both the old and the new secret verify
        Webhook(sub["secret"]).verify(last.body, last.headers)
        Webhook(rotated["secret"]).verify(last.body, last.headers)


def test_test_event_to_a_dead_endpoint_reports_the_error(admin: httpx.Client) -> None:
    url = f"http://127.0.0.1:{free_port()}/gone"
    sub = admin.post("/v1/subscriptions", json={"url": url}).json()
    attempt = admin.post(f"/v1/subscriptions/{sub['id']}/test").json()
    assert attempt["succeeded"] is False
    assert attempt["status_code"] is None
    assert "refused" in attempt["error"]


def test_test_is_owner_scoped(admin: httpx.Client) -> None:
    sub = admin.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/x"}).json()
    with service_client(admin, "other") as other:
        assert other.post(f"/v1/subscriptions/{sub['id']}/test").status_code == 404
