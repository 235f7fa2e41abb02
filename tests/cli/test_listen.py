"""What ``relay listen`` prints for a delivery."""

from __future__ import annotations

from relay.cli.listen import describe


def test_a_clever_event_names_its_district_and_record() -> None:
    line = describe({"type": "users.updated", "district": "d1", "data": {"object": {"id": "u1"}}})
    assert line.split() == ["users.updated", "district=d1", "record=u1"]


def test_an_operational_event_says_what_it_is_about_and_why() -> None:
    disabled = {
        "type": "relay.subscription.disabled",
        "data": {"object": {"id": "sub_1", "disabled_reason": "the endpoint answered 410 Gone"}},
    }
    assert describe(disabled).endswith("about=sub_1: the endpoint answered 410 Gone")
    district = {
        "type": "relay.district.unauthorized",
        "data": {"object": {"id": "d1", "status": "unauthorized", "last_error": "401"}},
    }
    assert describe(district).endswith("about=d1: 401")
