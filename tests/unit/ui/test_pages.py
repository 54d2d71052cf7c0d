"""The console through its app (no browser): sign-in, tenant isolation, admin actions, CSRF, escaping,
the run list's filter/sort/pages, and the deployment forms calling the same store as `tunesmith deploy`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.ui_registry import XSS, Filled, fill, write_run
from tunesmith.registry.models import AuditRecord
from tunesmith.registry.serving_records import Caller
from tunesmith.ui.app import create_ui_app

ADMIN = Caller(tenant=None, is_admin=True)


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Filled:
    """One registry for the tests that only read (and those whose changes the others do not look at)."""
    return fill(tmp_path_factory.mktemp("console"))


@pytest.fixture
def fresh(tmp_path: Path) -> Filled:
    """A registry of this test's own, for a test that changes what the others read."""
    return fill(tmp_path)


def token(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def signed_in(filled: Filled, tmp_path: Path, who: str) -> TestClient:
    client = TestClient(create_ui_app(filled.registry, secret_path=tmp_path / "secret"))
    login = client.get("/login")
    response = client.post("/login", data={"csrf_token": token(login.text), "key": filled.keys[who]})
    assert response.status_code == 200 and response.url.path == "/runs"
    return client


def test_pages_need_sign_in_and_a_bad_key_is_refused(filled: Filled, tmp_path: Path) -> None:
    client = TestClient(create_ui_app(filled.registry, secret_path=tmp_path / "secret"))
    page = client.get(f"/runs/{filled.runs['acme'][0]}")
    assert page.url.path == "/login" and "Sign in" in page.text
    refused = client.post("/login", data={"csrf_token": token(page.text), "key": "ts-wrong"})
    assert refused.status_code == 401 and "invalid or revoked" in refused.text
    cookie = client.cookies.get("tunesmith_session")
    assert cookie is not None and cookie.startswith("-.")  # still anonymous


def test_sign_in_follows_next_only_on_this_site(filled: Filled, tmp_path: Path) -> None:
    client = TestClient(create_ui_app(filled.registry, secret_path=tmp_path / "secret"))
    login = client.get("/login")
    for target, landed in ((f"/runs/{filled.runs['acme'][0]}", f"/runs/{filled.runs['acme'][0]}"),
                           ("//evil.example/x", "/runs"), ("https://evil.example/", "/runs")):  # fmt: skip
        client.cookies.clear()
        login = client.get("/login")
        response = client.post("/login", data={"csrf_token": token(login.text), "key": filled.keys["acme"],
                                               "next": target})  # fmt: skip
        assert response.url.path == landed and response.url.host == "testserver"


def test_a_post_without_the_session_token_is_refused(filled: Filled, tmp_path: Path) -> None:
    client = signed_in(filled, tmp_path, "admin")
    url = f"/deployments/{filled.deployment}/rollback"
    assert client.post(url, data={}).status_code == 403
    assert client.post(url, data={"csrf_token": "0" * 64}).status_code == 403
    other = signed_in(filled, tmp_path, "admin")  # another session's token
    assert client.post(url, data={"csrf_token": token(other.get("/runs").text)}).status_code == 403
    assert len(filled.store.find_deployment(ADMIN, filled.deployment)["history"]) == 1  # nothing changed


def test_a_tenant_sees_only_its_own_runs_evaluations_datasets_and_deployments(
    filled: Filled, tmp_path: Path
) -> None:
    globex = signed_in(filled, tmp_path, "globex")
    listing = globex.get("/runs").text
    assert filled.runs["globex"][0] in listing and filled.runs["acme"][0] not in listing
    for path in (f"/runs/{filled.runs['acme'][0]}", f"/evaluations/{filled.evaluation_id}",
                 f"/deployments/{filled.deployment}",
                 f"/runs/compare?run={filled.runs['acme'][0]}&run={filled.runs['globex'][0]}"):  # fmt: skip
        assert globex.get(path).status_code == 404, path
    assert globex.get(f"/runs/{filled.runs['globex'][0]}").status_code == 200
    assert globex.get(f"/evaluations/{filled.globex_evaluation_id}").status_code == 200
    acme = signed_in(filled, tmp_path, "acme")
    assert acme.get(f"/runs/{filled.runs['globex'][0]}").status_code == 404
    assert acme.get(f"/evaluations/{filled.globex_evaluation_id}").status_code == 404
    assert "acme-voice" in acme.get("/deployments").text


def test_model_output_is_escaped(filled: Filled, tmp_path: Path) -> None:
    page = signed_in(filled, tmp_path, "admin").get(f"/evaluations/{filled.evaluation_id}?order=index")
    assert XSS not in page.text
    assert "&lt;script&gt;window.__xss = 1&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_admin_actions_need_an_admin(filled: Filled, tmp_path: Path) -> None:
    acme = signed_in(filled, tmp_path, "acme")
    page = acme.get(f"/deployments/{filled.deployment}").text
    assert "promote-form" not in page
    refused = acme.post(f"/deployments/{filled.deployment}/rollback", data={"csrf_token": token(page)})
    assert refused.status_code == 403


def test_promote_weights_and_rollback_go_through_the_store_with_the_key_as_actor(
    fresh: Filled, tmp_path: Path
) -> None:
    filled = fresh
    admin = signed_in(filled, tmp_path, "admin")
    url = f"/deployments/{filled.deployment}"
    csrf = token(admin.get(url).text)
    assert (
        admin.post(f"{url}/promote", data={"csrf_token": csrf, "model": "acme-adapter@2"}).status_code == 200
    )
    assert filled.store.find_deployment(ADMIN, filled.deployment)["variants"] == [
        {"model": "acme-adapter@2", "weight": 100.0}
    ]
    weights = {
        "csrf_token": csrf,
        "model": ["acme-adapter@1", "acme-adapter@3", ""],
        "weight": ["30", "70", "0"],
    }
    assert admin.post(f"{url}/weights", data=weights).status_code == 200
    assert [v["weight"] for v in filled.store.find_deployment(ADMIN, filled.deployment)["variants"]] == [
        30.0,
        70.0,
    ]
    assert admin.post(f"{url}/rollback", data={"csrf_token": csrf}).status_code == 200
    assert filled.store.find_deployment(ADMIN, filled.deployment)["variants"] == [
        {"model": "acme-adapter@2", "weight": 100.0}
    ]
    refused = admin.post(f"{url}/promote", data={"csrf_token": csrf, "model": "globex-adapter@1"})
    assert refused.status_code == 400 and "no such adapter" in refused.text  # another tenant's adapter
    key_id = filled.store.authenticate(filled.keys["admin"]).key_id  # type: ignore[union-attr]
    with filled.registry.session() as session:
        records = session.scalars(select(AuditRecord).where(AuditRecord.target == filled.deployment)).all()
    assert [(r.action, r.actor) for r in records[1:]] == [
        ("deployment.promote", f"key:{key_id}"), ("deployment.set_weights", f"key:{key_id}"),
        ("deployment.rollback", f"key:{key_id}"),
    ]  # fmt: skip


def test_the_run_list_filters_sorts_and_pages_in_sql(fresh: Filled, tmp_path: Path) -> None:
    filled = fresh
    for index in range(47):
        write_run(filled.registry, tmp_path / "more", f"run-bulk-{index:02d}", steps=2, lr=1e-4 * (index + 1))
    admin = signed_in(filled, tmp_path, "admin")
    first = admin.get("/runs?sort=train_loss&order=asc").text
    assert "page 1 of 2" in first and ">51<" in first
    ids = re.findall(r'href="/runs/(run-[^"]+)"', first)
    assert len(ids) == 50
    second = admin.get("/runs?sort=train_loss&order=asc&page=2").text
    assert set(ids).isdisjoint(re.findall(r'href="/runs/(run-[^"]+)"', second))
    assert re.findall(r'href="/runs/(run-[^"]+)"', admin.get("/runs?q=acme-1").text) == ["run-acme-1"]
    assert admin.get("/runs?sort=bad%20name").status_code == 400


def test_a_revoked_key_is_signed_out_at_its_next_request(fresh: Filled, tmp_path: Path) -> None:
    filled = fresh
    acme = signed_in(filled, tmp_path, "acme")
    key_id = filled.store.authenticate(filled.keys["acme"]).key_id  # type: ignore[union-attr]
    filled.store.revoke_key(key_id)
    assert acme.get("/runs").url.path == "/login"


def test_without_auth_the_local_user_is_an_admin_and_forms_still_need_the_token(
    filled: Filled, tmp_path: Path
) -> None:
    client = TestClient(create_ui_app(filled.registry, auth=False, secret_path=tmp_path / "secret"),
                        base_url="http://127.0.0.1")  # fmt: skip
    page = client.get(f"/deployments/{filled.deployment}")
    assert page.status_code == 200 and "promote-form" in page.text
    assert client.post(f"/deployments/{filled.deployment}/rollback", data={}).status_code == 403
    rebinding = TestClient(create_ui_app(filled.registry, auth=False, secret_path=tmp_path / "secret"),
                           base_url="http://evil.example")  # fmt: skip
    assert rebinding.get("/runs").status_code == 400


def test_the_console_queries_run_on_sqlite_and_postgresql(database_url: str, tmp_path: Path) -> None:
    from tunesmith.ui import queries

    filled = fill(tmp_path, database_url)
    acme = filled.store.authenticate(filled.keys["acme"])
    assert acme is not None
    wanted = queries.RunFilter(text="ACME", sort="val_loss", descending=False)
    runs, total = queries.list_runs(filled.registry, ADMIN, wanted)
    assert total == 3 and [r["id"] for r in runs] == ["run-acme-2", "run-acme-1", "run-acme-0"]
    runs, total = queries.list_runs(filled.registry, acme, queries.RunFilter(sort="dataset"))
    assert total == 3 and all(r["id"].startswith("run-acme") for r in runs)
    assert queries.find_evaluation(filled.registry, acme, filled.globex_evaluation_id) is None
    assert [d["id"] for d in queries.list_datasets(filled.registry, acme)] == ["d" * 64]


def test_every_post_checks_the_csrf_token() -> None:
    from fastapi.routing import APIRoute

    from tunesmith.ui.app import ROUTERS
    from tunesmith.ui.web import check_csrf

    routes = [route for router in ROUTERS for route in router.routes]
    posts = [r for r in routes if isinstance(r, APIRoute) and "POST" in r.methods]
    assert len(posts) >= 5
    for route in posts:
        assert any(d.call is check_csrf for d in route.dependant.dependencies), route.path


def test_per_class_tables_show_escaped_labels(filled: Filled, tmp_path: Path) -> None:
    page = signed_in(filled, tmp_path, "globex").get(f"/evaluations/{filled.globex_evaluation_id}").text
    assert "Per class: acme-adapter" in page and "&lt;refund&gt;" in page and "0.850" in page
