"""Console sessions: the signed session cookie, its secret, and the CSRF token of each session. No torch.

A session is `who.nonce.issued`: `who` is an API key id (signed in), `-` (a visitor who has not signed
in yet) or `local` (`--no-auth`); `nonce` names the session; `issued` is when it began (Unix seconds).
The cookie carries it with an HMAC-SHA256 of it under a secret kept in `TUNESMITH_HOME/ui_secret`
(created once, 0600), so a cookie cannot be forged or edited. Nothing is kept server-side: a key
revoked with `tunesmith keys revoke` ends its sessions at their next request, because every request
looks the key up again (see `web.viewer`).

Every session, a visitor's included, has a CSRF token: an HMAC of its nonce (another purpose prefix
than the cookie's, so a token is never a valid signature). Forms carry it; every POST must send it
back. Signing in starts a new session (new nonce), so a session id planted before sign-in is useless.

Owns: the cookie format, signing and checking it, the secret file, the CSRF token. Does not own:
looking keys up (`registry.serving_store`), HTTP (`web`, `routes`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

SESSION_COOKIE = "tunesmith_session"
SESSION_MAX_AGE_S = 12 * 3600  # a working day; signing in again takes one paste
ANONYMOUS = "-"  # a visitor who has not signed in
LOCAL = "local"  # `tunesmith ui --no-auth`: the local single user, an admin


@dataclass(frozen=True)
class Session:
    """Who a cookie says is signed in (`who`: a key id, ANONYMOUS or LOCAL), since when, under which nonce."""

    who: str
    nonce: str
    issued: int

    @property
    def key_id(self) -> int | None:
        """The API key id, for a signed-in session; None otherwise."""
        return int(self.who) if self.who.isdigit() else None


def new_session(who: str, now: float | None = None) -> Session:
    return Session(who=who, nonce=secrets.token_urlsafe(16), issued=int(time.time() if now is None else now))


def _mac(secret: bytes, purpose: str, message: str) -> str:
    return hmac.new(secret, f"{purpose}\0{message}".encode(), hashlib.sha256).hexdigest()


def sign_session(session: Session, secret: bytes) -> str:
    """The cookie value: `who.nonce.issued.signature`."""
    body = f"{session.who}.{session.nonce}.{session.issued}"
    return f"{body}.{_mac(secret, 'session', body)}"


def read_session(cookie: str | None, secret: bytes, now: float | None = None) -> Session | None:
    """The session in a cookie; None if missing, malformed, forged, edited or older than SESSION_MAX_AGE_S."""
    if not cookie:
        return None
    body, _, signature = cookie.rpartition(".")
    if not hmac.compare_digest(signature, _mac(secret, "session", body)):
        return None
    who, nonce, issued = (body.split(".") + ["", "", ""])[:3]
    if not issued.isdigit() or not (who.isdigit() or who in (ANONYMOUS, LOCAL)):
        return None
    age = (time.time() if now is None else now) - int(issued)
    if not 0 <= age <= SESSION_MAX_AGE_S:
        return None
    return Session(who=who, nonce=nonce, issued=int(issued))


def csrf_token(session: Session, secret: bytes) -> str:
    """The token every form of this session carries."""
    return _mac(secret, "csrf", session.nonce)


def is_valid_csrf(session: Session, secret: bytes, token: str | None) -> bool:
    return token is not None and hmac.compare_digest(token, csrf_token(session, secret))


def load_secret(path: Path) -> bytes:
    """The signing secret in `path`, created (32 random bytes, hex, mode 0600) if missing.

    Created by linking a complete temporary file into place, so two consoles starting at once agree on
    one secret and neither ever reads half of one.
    """
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        descriptor = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as stream:
            stream.write(secrets.token_hex(32))
            stream.flush()
            os.fsync(stream.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process won: use its secret
        finally:
            temporary.unlink()
    return bytes.fromhex(path.read_text(encoding="ascii").strip())
