"""Per-token rate limits (429) and load shedding (503), in-process and through the real server."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from cwhost.accounts import tokens as auth
from cwhost.api.ratelimit import RateLimiter
from cwhost.app import create_app
from cwhost.config.server import ConfigError
from cwhost.db.database import Database
from tests.helpers import bearer, cli, make_config, start_server


def _app(tmp_path, **server):
    config = make_config(tmp_path / "data", server={"threads": 64, "max_in_flight": 60, **server})
    Database(config.database_path).migrate()
    return create_app(config)


def test_each_token_has_its_own_rate_limit(tmp_path):
    app = _app(tmp_path, rate_limit_per_minute=5)
    client = app.test_client()
    db = app.extensions["cwhost"].db
    alice, bob = bearer(auth.create_key(db, "alice").token), bearer(auth.create_key(db, "bob").token)
    assert [client.get("/v1/workstations", headers=alice).status_code for _ in range(5)] == [200] * 5
    limited = client.get("/v1/workstations", headers=alice)
    assert (limited.status_code, limited.get_json()["error"]) == (429, "rate_limited")
    assert int(limited.headers["Retry-After"]) > 0
    assert limited.get_json()["requestId"] == limited.headers["X-Request-Id"]
    assert client.get("/v1/workstations", headers=bob).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_the_rate_limit_is_exact_across_threads(tmp_path):
    app = _app(tmp_path, rate_limit_per_minute=40)
    alice = bearer(auth.create_key(app.extensions["cwhost"].db, "alice").token)
    statuses = []
    barrier = threading.Barrier(8)

    def hammer():
        own = app.test_client()
        barrier.wait()
        for _ in range(10):
            statuses.append(own.get("/v1/workstations", headers=alice).status_code)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses.count(200) == 40 and statuses.count(429) == 40


def test_requests_past_the_in_flight_bound_are_shed_and_health_still_answers(tmp_path, monkeypatch):
    app = _app(tmp_path, max_in_flight=2)
    components = app.extensions["cwhost"]
    alice = bearer(auth.create_key(components.db, "alice").token)
    release = threading.Event()
    inside = threading.Semaphore(0)
    original = components.services.store.page

    def slow_list(*args, **kwargs):
        inside.release()
        release.wait(5)
        return original(*args, **kwargs)

    monkeypatch.setattr(components.services.store, "page", slow_list)
    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(app.test_client().get, "/v1/workstations", headers=alice) for _ in range(2)]
        assert inside.acquire(timeout=5) and inside.acquire(timeout=5)
        shed = app.test_client().get("/v1/workstations", headers=alice)
        health = app.test_client().get("/healthz")
        release.set()
        assert [f.result().status_code for f in held] == [200, 200]
    assert (shed.status_code, shed.get_json()["error"]) == (503, "unavailable")
    assert shed.headers["Retry-After"] == "1"
    assert health.status_code == 200
    assert app.test_client().get("/v1/workstations", headers=alice).status_code == 200


def test_the_bound_must_leave_threads_free(tmp_path):
    with pytest.raises(ConfigError, match="max_in_flight must be less than server.threads"):
        make_config(tmp_path, server={"threads": 4, "max_in_flight": 4})


def test_429_and_503_through_the_real_server(tmp_path):
    server = start_server(tmp_path, "[server]\nthreads = 8\nmax_in_flight = 1\nrate_limit_per_minute = 100000\n")
    try:
        token = cli(server.env, "keys", "create", "--account", "a").stdout.split()[-1]
        headers = {"Authorization": f"Bearer {token}"}

        def burst(_):
            with requests.Session() as session:
                # A read that reaches SQLite, so that requests overlap.
                return [session.get(server.url + "/v1/account/usage", headers=headers) for _ in range(20)]

        with ThreadPoolExecutor(16) as pool:
            answers = [r for batch in pool.map(burst, range(16)) for r in batch]
        statuses = {r.status_code for r in answers}
        assert statuses <= {200, 503} and 503 in statuses and 200 in statuses
        assert all(r.headers["Retry-After"] == "1" for r in answers if r.status_code == 503)
        assert requests.get(server.url + "/healthz").status_code == 200
    finally:
        server.stop()

    (tmp_path / "second").mkdir()
    limited = start_server(tmp_path / "second", "[server]\nrate_limit_per_minute = 3\n")
    try:
        token = cli(limited.env, "keys", "create", "--account", "a").stdout.split()[-1]
        headers = {"Authorization": f"Bearer {token}"}
        statuses = [requests.get(limited.url + "/v1/workstations", headers=headers).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
    finally:
        limited.stop()


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_rate_limit_slides_with_the_last_minute_weighted():
    clock = Clock(60 * 1000.0)
    limiter = RateLimiter(10, clock=clock)
    assert [limiter.retry_after("a") for _ in range(10)] == [None] * 10
    # All ten in this minute: one more fits once the next minute has covered
    # a tenth of this one, 6 s into it: 54 s from here.
    clock.now += 6
    assert limiter.retry_after("a") == 60 - 6 + 6
    clock.now += 60
    # 6 s into the next minute, the ten count for 0.9 x 10 = 9: one fits, not two.
    assert limiter.retry_after("a") is None
    assert limiter.retry_after("a") == 6
    clock.now += 6
    assert limiter.retry_after("a") is None
    # Another token is counted apart; a minute with nothing forgets it all.
    assert limiter.retry_after("b") is None
    clock.now += 120
    assert [limiter.retry_after("a") for _ in range(10)] == [None] * 10
    # 12 s into this minute: 48 s to its end, then 6 s into the next.
    assert limiter.retry_after("a") == 48 + 6
