"""Signing in with an API token, and out.

The token goes in once, in a POST body; the answer sets a session cookie
(HttpOnly, SameSite=Strict, Secure over TLS) and the token is never shown or
stored in the browser again. Failed sign-ins are counted per client address
over a sliding minute, as the API counts requests per token.
"""

from __future__ import annotations

from flask import Blueprint, g, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException, InternalServerError, default_exceptions

from cwhost.errors import ServiceError
from cwhost.web.guard import COOKIE, failed_sign_ins, signed_in, web_sessions


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
        retry_after = failed_sign_ins().retry_after(address)
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


def refusal_page(error: ServiceError):
    """The domain's refusal (404 across accounts, 400 for a state, 429, 503) as a page, with its own words."""
    page = default_exceptions.get(error.status, InternalServerError)(description=error.message)
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else {}
    return (*error_page(page), headers)


def register(blp: Blueprint) -> None:
    blp.add_url_rule("/login", "login", login, methods=["GET", "POST"])
    blp.add_url_rule("/logout", "logout", logout, methods=["POST"])
    blp.register_error_handler(HTTPException, error_page)
    blp.register_error_handler(ServiceError, refusal_page)
