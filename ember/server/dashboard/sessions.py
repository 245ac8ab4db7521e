"""Dashboard sessions: who a browser is, after it logged in with an Ember token.

Logging in checks the token as every gRPC request is checked (auth.Identity), and makes a
random session id, held here (never derived from the token): the browser keeps it in an HttpOnly,
SameSite=Strict cookie. A session ends at logout, after SESSION_HOURS, when its token is revoked or
expires, or when the control plane restarts (the browser logs in again). Each session has a CSRF
secret that every form posts back.
"""

import hmac
import secrets
import time
from dataclasses import dataclass

from ..auth import ADMIN, TOKEN_ID_KEY, TOKEN_SECRET_KEY, WORKSPACE, Forbidden, Identity, Principal, Unauthenticated

COOKIE = "ember_session"
SESSION_HOURS = 12.0
MAX_SESSIONS = 10_000  # a bound on memory: the oldest sessions end first


@dataclass(slots=True)
class Session:
    principal: Principal
    csrf: str
    expires_at: float  # unix seconds

    @property
    def workspace(self) -> str | None:
        """Whose objects it shows: its token's workspace, or None (every one) for an admin."""
        return None if self.principal.is_admin else self.principal.workspace


class Sessions:
    def __init__(self, identity: Identity, clock=time.time):
        self.identity = identity
        self.clock = clock
        self._sessions: dict[str, Session] = {}

    def login(self, token_id: str, secret: str) -> tuple[str, Session]:
        """A new session for a valid admin or workspace token: (its id, it). Unauthenticated or
        Forbidden (a worker token, say) with what is wrong."""
        principal = self.identity.authenticate(((TOKEN_ID_KEY, token_id), (TOKEN_SECRET_KEY, secret)),
                                               (ADMIN, WORKSPACE))
        now = self.clock()
        for sid in [sid for sid, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[sid]
        while len(self._sessions) >= MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]
        sid = secrets.token_urlsafe(32)
        session = self._sessions[sid] = Session(principal, secrets.token_urlsafe(24), now + SESSION_HOURS * 3600)
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        """The live session of a cookie's id, else None (and a dead one is forgotten)."""
        session = self._sessions.get(sid or "")
        if session is None:
            return None
        try:
            if self.clock() >= session.expires_at:
                raise Unauthenticated("the session expired")
            self.identity.check(session.principal)  # its token revoked or expired since
        except (Unauthenticated, Forbidden):
            del self._sessions[sid]
            return None
        return session

    def logout(self, sid: str | None):
        self._sessions.pop(sid or "", None)

    @staticmethod
    def csrf_ok(session: Session, sent: str) -> bool:
        return bool(sent) and hmac.compare_digest(session.csrf, sent)
