"""What every dashboard request passes: a session, its CSRF token on each change, the API's rate limit,
and the headers that keep the pages from running anything but their own files."""

from __future__ import annotations

import hmac
from functools import wraps

from flask import Blueprint, Flask, abort, current_app, g, redirect, request, url_for

from cwhost.api.components import components
from cwhost.api.ratelimit import RateLimiter
from cwhost.web.sessions import WebSessions

COOKIE = "cwhost_session"
# Failed sign-ins one client address may make in a minute.
FAILED_SIGN_INS_PER_MINUTE = 10
CSRF_HEADER = "X-CSRF-Token"
# The pages' own files only: no inline script or style, no other origin, never framed by another site.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-src 'self'; frame-ancestors 'self'; base-uri 'none'"
)


def install_session_store(app: Flask) -> None:
    found = components(app)
    app.extensions["cwhost.web"] = WebSessions(found.tokens, found.config.web.session_minutes * 60)
    app.extensions["cwhost.web.failed_sign_ins"] = RateLimiter(FAILED_SIGN_INS_PER_MINUTE)


def web_sessions() -> WebSessions:
    sessions = current_app.extensions["cwhost.web"]
    assert isinstance(sessions, WebSessions)
    return sessions


def failed_sign_ins() -> RateLimiter:
    limiter = current_app.extensions["cwhost.web.failed_sign_ins"]
    assert isinstance(limiter, RateLimiter)
    return limiter


def signed_in(view):
    """The view runs for a live session (else: to the sign-in page); a change needs the session's CSRF token."""

    @wraps(view)
    def guarded(*args, **kwargs):
        found = web_sessions().find(request.cookies.get(COOKIE))
        if found is None:
            if request.headers.get("HX-Request"):
                return "", 401, {"HX-Redirect": url_for("web.login")}
            return redirect(url_for("web.login", next=request.path))
        g.web_session, g.principal = found
        if request.method != "GET":
            given = request.headers.get(CSRF_HEADER) or _form_csrf_token()
            if not hmac.compare_digest(given.encode(), g.web_session.csrf_token.encode()):
                abort(403, "This form has expired or did not come from this dashboard; reload the page.")
        if components().rate_limiter.retry_after(g.principal.key_id) is not None:
            abort(429, "Too many requests from this account; wait a moment.")
        return view(*args, **kwargs)

    return guarded


def _form_csrf_token() -> str:
    """A form's token; a body that is not a form (an upload) is never read to look for one."""
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return request.form.get("csrf_token", "")
    return ""


def new_blueprint() -> Blueprint:
    """The dashboard's blueprint, one for each application (its routes are added by each page's module)."""
    blp = Blueprint("web", __name__, url_prefix="/ui", template_folder="templates", static_folder="static")
    blp.after_request(security_headers)
    return blp


def security_headers(response):
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if not request.path.startswith("/ui/static/"):
        response.headers["Cache-Control"] = "no-store"
    return response
