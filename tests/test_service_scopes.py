"""Section 7's scopes (issue 9 item 6), odd paths (item 12) and the outputs import (item 13).

Each attack (a registrar token taking what it may not) has a control: the same request,
otherwise valid, that the registrar may make, or that an admin token may make.
"""

from __future__ import annotations

from typing import Any

import httpx
from test_service_support import Server, World, json_error

pytest_plugins = ("test_service_support",)  # fixtures: served


def _call(
    server: Server, method: str, path: str, token: str, body: object = None
) -> httpx.Response:
    return httpx.request(
        method,
        server.url + path,
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )


def _create(server: Server, token: str, **body: Any) -> httpx.Response:
    return _call(server, "POST", "/v1/admin/feedstocks", token, body)


def test_registrar_adds_only_the_first_key(served: tuple[World, Server]) -> None:
    world, server = served
    bot, admin = world.registrar_token, world.admin_token
    _, first = world.feedstock_key("sc-live-1")
    _, attacker = world.feedstock_key("sc-live-attacker")
    # Control: a keyless feedstock gets its first key from the registrar.
    assert _create(server, bot, name="sc-live", outputs=["sc-live"]).status_code == 201
    added = _call(server, "POST", "/v1/admin/feedstocks/sc-live/keys", bot, {"key": first})
    assert added.status_code == 201, added.text
    assert added.json()["feedstock"]["delegated"] is True
    # Attack: a (stolen) registrar token adds its own key to the now live feedstock.
    body = json_error(
        _call(server, "POST", "/v1/admin/feedstocks/sc-live/keys", bot, {"key": attacker}), 403
    )
    assert body["error"] == "has_key" and "admin" in body["detail"]
    view = _call(server, "GET", "/v1/admin/feedstocks/sc-live", bot).json()
    assert [k["keyid"] for k in view["keys"]] == [added.json()["feedstock"]["keys"][0]["keyid"]]
    # Control: the same key from an admin is a rotation, and is accepted.
    rotated = _call(server, "POST", "/v1/admin/feedstocks/sc-live/keys", admin, {"key": attacker})
    assert rotated.status_code == 201, rotated.text
    assert len(rotated.json()["feedstock"]["keys"]) == 2


def test_a_glob_needs_a_literal_prefix(served: tuple[World, Server]) -> None:
    world, server = served
    for token in (world.registrar_token, world.admin_token):  # nobody registers `*`
        for pattern in ("*", "*-foo", "?x*", "[a-z]*"):
            body = json_error(
                _create(server, token, name="sc-star", outputs=[], output_globs=[pattern]), 400
            )
            assert body["error"] == "invalid_glob", body
    # Control: a pattern with a literal prefix is a registrar's to give a new feedstock.
    ok = _create(server, world.registrar_token, name="sc-star", output_globs=["sc-star-*"])
    assert ok.status_code == 201, ok.text
    assert ok.json()["feedstock"]["output_globs"] == ["sc-star-*"]


def test_registrar_takes_no_owned_name(served: tuple[World, Server]) -> None:
    world, server = served
    bot, admin = world.registrar_token, world.admin_token
    assert _create(server, bot, name="sc-owner", outputs=["sc-numpy"],
                   output_globs=["sc-libnumpy-*"]).status_code == 201  # fmt: skip
    # Attacks: a new feedstock claiming a listed name, a name a glob covers, a glob that
    # matches an owned name, a glob overlapping another's glob.
    for body in (
        {"name": "sc-thief", "outputs": ["sc-numpy"]},
        {"name": "sc-thief", "outputs": ["sc-libnumpy-core"]},
        {"name": "sc-thief", "output_globs": ["sc-num*"]},
        {"name": "sc-thief", "output_globs": ["sc-libnumpy-c*"]},
    ):
        answer = json_error(_create(server, bot, **body), 403)
        assert answer["error"] == "owned_name" and "sc-owner" in answer["detail"], answer
    assert _call(server, "GET", "/v1/admin/feedstocks/sc-thief", bot).status_code == 404
    # Control: the same feedstock with names nobody owns.
    assert _create(server, bot, name="sc-thief", outputs=["sc-scipy"]).status_code == 201
    # Attacks on an existing feedstock: adding an owned name or a glob matching one.
    for patch in ({"add_outputs": ["sc-numpy"]}, {"add_globs": ["sc-numpy*"]}):
        response = _call(server, "PATCH", "/v1/admin/feedstocks/sc-thief", bot, patch)
        answer = json_error(response, 403)
        assert answer["error"] == "owned_name", answer
    # Control: unowned additions are the registrar's; sharing an owned name is an admin's.
    ok = _call(server, "PATCH", "/v1/admin/feedstocks/sc-thief", bot,
               {"add_outputs": ["sc-scipy-extra"], "add_globs": ["sc-scipy-*"]})  # fmt: skip
    assert ok.status_code == 200, ok.text
    shared = _call(server, "PATCH", "/v1/admin/feedstocks/sc-thief", admin,
                   {"add_outputs": ["sc-numpy"]})  # fmt: skip
    assert shared.status_code == 200 and "sc-numpy" in shared.json()["feedstock"]["outputs"]


def test_registrar_import_leaves_out_owned_names(served: tuple[World, Server]) -> None:
    world, server = served
    bot, admin = world.registrar_token, world.admin_token
    assert _create(server, bot, name="sc-imp-a", outputs=["sc-imp-x"]).status_code == 201
    body = {"outputs": {"sc-imp-x": ["sc-imp-b"], "sc-imp-y": ["sc-imp-b"]},
            "output_globs": {"sc-imp-b": ["sc-imp-x*"]}}  # fmt: skip
    answer = _call(server, "POST", "/v1/admin/outputs/import", bot, body)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["needs_admin"] == [
        "glob sc-imp-x* -> sc-imp-b (matches sc-imp-x of sc-imp-a)",
        "sc-imp-x -> sc-imp-b (owned by sc-imp-a)",
    ], result
    view = _call(server, "GET", "/v1/admin/feedstocks/sc-imp-b", bot).json()
    assert view["outputs"] == ["sc-imp-y"] and view["output_globs"] == []
    # Control: an admin's import of the same mapping shares the name.
    answer = _call(server, "POST", "/v1/admin/outputs/import", admin, body)
    assert answer.status_code == 200 and answer.json()["needs_admin"] == []
    view = _call(server, "GET", "/v1/admin/feedstocks/sc-imp-b", bot).json()
    assert view["outputs"] == ["sc-imp-x", "sc-imp-y"] and view["output_globs"] == ["sc-imp-x*"]


def test_import_normalises_the_feedstock_suffix(served: tuple[World, Server]) -> None:
    """The real registry has entries like {"feedstocks": ["vouch-feedstock"]}."""
    world, server = served
    body = {"outputs": {"sc-vouch": ["sc-vouch-feedstock"], "sc-other": ["sc-other"]}}
    answer = _call(server, "POST", "/v1/admin/outputs/import", world.registrar_token, body)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["normalized"] == 1 and result["created"] == 2
    assert any("sc-vouch-feedstock -> sc-vouch" in note for note in result["notes"]), result
    view = _call(server, "GET", "/v1/admin/feedstocks/sc-vouch", world.registrar_token)
    assert view.status_code == 200 and view.json()["outputs"] == ["sc-vouch"]
    # Elsewhere the suffix is still refused: a feedstock is registered by its name.
    body = json_error(_create(server, world.registrar_token, name="sc-new-feedstock"), 400)
    assert "suffix" in body["detail"]


ODD = ["%00", "a%00b.json", "key_mgr.json%00", "%ff%fe", "..%2fkey_mgr.json", "%0a", "%ed%a0%80"]


def test_odd_paths_are_4xx_json(served: tuple[World, Server]) -> None:
    world, server = served
    for odd in ODD:
        for method in ("GET", "HEAD"):
            response = httpx.request(method, f"{server.url}/trust/{odd}", timeout=30)
            assert response.status_code == 404, (odd, response.status_code, response.text)
        json_error(httpx.get(f"{server.url}/trust/{odd}"), 404)
        for path in (f"/v1/admin/feedstocks/{odd}", f"/v1/admin/feedstocks?after={odd}"):
            answer = _call(server, "GET", path, world.admin_token)
            assert 400 <= answer.status_code < 500 or answer.status_code == 200, answer.text
            assert answer.headers["content-type"].startswith("application/json")
        answer = _call(server, "POST", f"/v1/admin/attestations/noarch/{odd}/withdraw",
                       world.admin_token, {"reason": "x"})  # fmt: skip
        assert 400 <= answer.status_code < 500, (odd, answer.text)
    # A KEYREF with a NUL (not a path the OS takes) is a 422, not a 500.
    answer = _call(server, "PUT", "/v1/admin/pkg-mgr-keys", world.admin_token,
                   {"keyrefs": ["file:/run/a\x00b"]})  # fmt: skip
    json_error(answer, 422)
    # Control: the same requests with a real path answer 200.
    assert httpx.get(f"{server.url}/trust/key_mgr.json").status_code == 200
    listed = _call(server, "GET", "/v1/admin/feedstocks?after=a", world.admin_token)
    assert listed.status_code == 200
    logs = "".join(s.log_path.read_text() for s in world.servers)
    assert "Traceback" not in logs and "internal error" not in logs, logs[-3000:]
