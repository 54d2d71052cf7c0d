"""Console sessions: the signed cookie, its expiry, the CSRF token and the secret file."""

from __future__ import annotations

import stat
from pathlib import Path

from tunesmith.ui.auth import (
    ANONYMOUS,
    SESSION_MAX_AGE_S,
    Session,
    csrf_token,
    is_valid_csrf,
    load_secret,
    new_session,
    read_session,
    sign_session,
)

SECRET = b"s" * 32


def test_a_signed_session_reads_back() -> None:
    session = new_session("7", now=1000)
    assert read_session(sign_session(session, SECRET), SECRET, now=1001) == session
    assert session.key_id == 7
    assert new_session(ANONYMOUS).key_id is None


def test_forged_edited_expired_or_garbled_cookies_are_refused() -> None:
    cookie = sign_session(Session("7", "nonce", 1000), SECRET)
    body, _, signature = cookie.rpartition(".")
    assert read_session(cookie, b"other secret" * 3, now=1001) is None  # another secret
    assert (
        read_session(body.replace("7", "1", 1) + "." + signature, SECRET, now=1001) is None
    )  # admin key id swapped in
    assert read_session(body + "." + "0" * 64, SECRET, now=1001) is None
    assert read_session(cookie, SECRET, now=1000 + SESSION_MAX_AGE_S + 1) is None  # expired
    assert read_session(cookie, SECRET, now=999 - 60) is None  # issued in the future
    for garbage in (None, "", "abc", "a.b.c.d", "....", cookie + "x"):
        assert read_session(garbage, SECRET, now=1001) is None


def test_the_csrf_token_belongs_to_its_session_and_is_not_a_cookie_signature() -> None:
    session, other = new_session("7"), new_session("7")
    token = csrf_token(session, SECRET)
    assert is_valid_csrf(session, SECRET, token)
    assert not is_valid_csrf(other, SECRET, token)
    assert not is_valid_csrf(session, SECRET, None)
    assert not is_valid_csrf(session, SECRET, "")
    assert token != sign_session(session, SECRET).rpartition(".")[2]


def test_the_secret_is_made_once_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "home" / "ui_secret"
    first = load_secret(path)
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret(path) == first
    assert [p.name for p in path.parent.iterdir()] == ["ui_secret"]  # no temporary left behind
