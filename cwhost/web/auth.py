"""Signing in with an API token, and out.

The token goes in once, in a POST body; the answer sets a session cookie
(HttpOnly, SameSite=Strict, Secure over TLS) and the token is never shown or
stored in the browser again. Failed sign-ins are counted per client address
over a sliding minute, as the API counts requests per token.
"""

from __future__ import annotations

from flask import Blueprint, g, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from cwhost.api.ratelimit import RateLimiter
from cwhost.web.guard import COOKIE, signed_in, web_sessions

# Failed sign-ins one client address may make in a minute.
FAILED_SIGN_INS_PER_MINUTE = 10
_failed_sign_ins = RateLimiter(FAILED_SIGN_INS_PER_MINUTE)


def _safe_next(target: str | None) -> str:
    """Only a dashboard path: never another site, whatever the link said."""
    if target and target.startswith("/ui/") and not target.startswith("//"):
        return target
    return url_for("web.workstations")


def login():
    if request.method == "GET":
        return render_template("login.html", next=request.args.get("next", ""))
    address = request.remote_addr or "unknown"
    opened = web_sessions().open(request.form.get("token", "").strip())
    if opened is None:
        retry_after = _failed_sign_ins.retry_after(address)
        status, message = (
            (429, f"Too many failed sign-ins; try again in {retry_after} s.")
            if retry_after is not None
            else (401, "That token is not valid (mistyped, or revoked).")
        )
        return render_template("login.html", error=message, next=request.form.get("next", "")), status
    session_id, _ = opened
    response = redirect(_safe_next(request.form.get("next")))
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=int(web_sessions().lifetime_seconds),
        path="/ui/",
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
    )
    return response


@signed_in
def logout():
    web_sessions().close(request.cookies.get(COOKIE))
    response = redirect(url_for("web.login"))
    response.delete_cookie(COOKIE, path="/ui/")
    return response


def error_page(error: HTTPException):
    signed = getattr(g, "web_session", None) is not None
    return render_template("error.html", error=error, signed_in=signed), error.code or 500


def register(blp: Blueprint) -> None:
    blp.add_url_rule("/login", "login", login, methods=["GET", "POST"])
    blp.add_url_rule("/logout", "logout", logout, methods=["POST"])
    blp.register_error_handler(HTTPException, error_page)
