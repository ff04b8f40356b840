"""Token verification: what a running server remembers of the tokens it has checked."""

from __future__ import annotations

import pytest

from cwhost.accounts import tokens as auth
from cwhost.db.database import Database


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path):
    database = Database(tmp_path / "cwhost.db")
    database.migrate()
    return database


@pytest.fixture
def reads(db, monkeypatch):
    """How many times the verifier asked the database about a token."""
    count = {"reads": 0}
    original = db.query_one

    def counting(sql, params=()):
        if "FROM api_keys" in sql:
            count["reads"] += 1
        return original(sql, params)

    monkeypatch.setattr(db, "query_one", counting)
    return count


def test_a_busy_token_is_read_from_the_database_once_a_second(db, reads):
    clock = Clock()
    verifier = auth.TokenVerifier(db, clock=clock)
    key = auth.create_key(db, "alice")
    principals = {verifier.verify(key.token) for _ in range(50)}
    assert principals == {auth.Principal(account_id=key.account_id, key_id=key.key_id, admin=False)}
    assert reads["reads"] == 1
    clock.now += auth.VERIFIED_TOKEN_SECONDS
    assert verifier.verify(key.token) is not None
    assert reads["reads"] == 2


def test_a_revoked_token_is_refused_within_a_second(db):
    clock = Clock()
    verifier = auth.TokenVerifier(db, clock=clock)
    key = auth.create_key(db, "alice")
    assert verifier.verify(key.token) is not None
    auth.revoke_key(db, key.key_id)
    clock.now += auth.VERIFIED_TOKEN_SECONDS
    assert verifier.verify(key.token) is None
    assert verifier.verify(key.token) is None


def test_unknown_tokens_are_never_remembered(db, reads):
    verifier = auth.TokenVerifier(db, clock=Clock())
    for attempt in range(3):
        assert verifier.verify("cwh_made-up") is None
    assert reads["reads"] == 3
    assert verifier.verify("") is None and verifier.verify("x" * 10_000) is None
    assert reads["reads"] == 3


def test_remembering_is_bounded_and_tokens_still_verify_past_the_bound(db, reads):
    verifier = auth.TokenVerifier(db, clock=Clock(), max_remembered=2)
    keys = [auth.create_key(db, f"team-{n}") for n in range(5)]
    for _ in range(2):
        assert [verifier.verify(key.token).key_id for key in keys] == [key.key_id for key in keys]
    # Past the bound the memory is dropped and filled again: more reads than
    # tokens, never a wrong answer.
    assert reads["reads"] > len(keys)
