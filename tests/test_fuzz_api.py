"""Schema fuzzing: schemathesis drives every operation of the OpenAPI document with generated input.

In-process (WSGI) against an app on the fake driver, authenticated as an
ordinary account. Every answer must be documented, of the documented content
type and schema, never a 5xx, and generated invalid input must be refused.
"""

from __future__ import annotations

import os
import shutil

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from cwhost.accounts import tokens as auth
from cwhost.app import create_app
from cwhost.db.database import Database
from tests.helpers import make_config, power_off_fake_guests, wait_for_status

EXAMPLES = int(os.environ.get("CWHOST_FUZZ_EXAMPLES", "100"))
# Input valid by the schema may still be refused by what the server holds now:
# a state that forbids the action (400 invalid_state), a size beyond this host
# (400), a type, GPU or workspace it does not have (422), a quota (403), credit
# (402) or capacity (503). Those are answers, not failures; 5xx never is.
CHECKS = {
    "positive_data_acceptance": {"expected-statuses": ["2xx", "400", "401", "402", "403", "404", "422", "429", "503"]}
}


# No readiness loop runs in these apps, so a wait for readiness lasts its whole timeout: a second at most.
FUZZ_READINESS = {"max_wait_seconds": 1}
# Streams (a process's output, a watch) and waits for a process last as long as they may: here, briefly.
FUZZ_STREAMS = {"max_seconds": 5, "keepalive_seconds": 1, "max_wait_seconds": 1}
FUZZ_RECORDINGS = {"max_seconds": 10}
# A listen records this long at most, then transcribes.
FUZZ_AUDIO = {"listen_max_seconds": 2}


def _app(tmp_path_factory):
    data = tmp_path_factory.mktemp("fuzz") / "data"
    config = make_config(
        data, readiness=FUZZ_READINESS, streams=FUZZ_STREAMS, recordings=FUZZ_RECORDINGS, audio=FUZZ_AUDIO
    )
    Database(config.database_path).migrate()
    return create_app(config), config


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory):
    app, config = _app(tmp_path_factory)
    token = auth.create_key(app.extensions["cwhost"].db, "fuzzer").token
    yield app, {"Authorization": f"Bearer {token}"}
    app.extensions["cwhost"].services.background.wait_idle()
    power_off_fake_guests(config.data_dir)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(scope="module")
def api_schema(fuzz_target):
    app, headers = fuzz_target
    # The token as configuration, not as call arguments: schemathesis then
    # knows it is real, and its auth check probes without it and with a bad one.
    token = headers["Authorization"].removeprefix("Bearer ")
    config = schemathesis.Config.from_dict({"auth": {"openapi": {"bearerAuth": {"bearer": token}}}, "checks": CHECKS})
    return schemathesis.openapi.from_wsgi("/openapi.json", app, config=config)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_survives_generated_input(case):
    case.call_and_validate()


# Scenarios of up to 15 steps; at 150, each step of the life cycle is
# reached several times in a run.
STATEFUL_EXAMPLES = int(os.environ.get("CWHOST_FUZZ_STATEFUL_EXAMPLES", "150"))


class FreshApp:
    """A WSGI app that is a new service on a copy of one database at each scenario.

    Hypothesis replays and shrinks scenarios, so each must start from the
    same state: the database with its token and nothing else, a fake host
    with nothing on it.
    """

    def __init__(self, root, pristine):
        self.root, self.pristine, self.app, self.config, self.count = root, pristine, None, None, 0

    def renew(self):
        self.close()
        self.count += 1
        data = self.root / f"scenario-{self.count}"
        data.mkdir()
        shutil.copy(self.pristine, data / "cwhost.db")
        self.config = make_config(
            data, readiness=FUZZ_READINESS, streams=FUZZ_STREAMS, recordings=FUZZ_RECORDINGS, audio=FUZZ_AUDIO
        )
        self.app = create_app(self.config)

    def close(self):
        if self.app is not None:
            self.app.extensions["cwhost"].services.background.wait_idle()
            power_off_fake_guests(self.config.data_dir)
            shutil.rmtree(self.config.data_dir, ignore_errors=True)
            self.app = None

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


def test_sequences_following_the_documents_links_survive(tmp_path):
    """Stateful: create, then follow the links to launch, stop, patch, delete what was created.

    Every step is checked as the stateless tests check a single call, with
    real ids from earlier answers, so the steps reach the states where the
    life cycle's rules (PATCH only when stopped, one launch at a time) apply.
    """
    pristine = make_config(tmp_path / "pristine")
    Database(pristine.database_path).migrate()
    token = auth.create_key(Database(pristine.database_path), "fuzzer").token
    target = FreshApp(tmp_path, pristine.database_path)
    target.renew()
    config = schemathesis.Config.from_dict(
        {
            "auth": {"openapi": {"bearerAuth": {"bearer": token}}},
            "checks": CHECKS,
            # The stateless test sends the invalid input; here valid input
            # walks the life cycle deep enough for its rules to apply.
            "generation": {"mode": "positive"},
            # Only the links the document gives, not ones guessed from names.
            "phases": {"stateful": {"inference": {"algorithms": []}}},
        }
    )
    schema = schemathesis.openapi.from_wsgi("/openapi.json", target, config=config)
    followed = set()

    class Workflow(schema.as_state_machine()):
        def setup(self):
            target.renew()

        def before_call(self, case):
            if (case.method.upper(), case.path) == ("POST", "/v1/workstations") and isinstance(case.body, dict):
                # A body valid by the schema is still refused for a GPU, type,
                # region or workspace this host does not have, or for sizes
                # beyond it (the stateless test sends those); here creation
                # must succeed for the links to lead anywhere.
                case.body = {
                    **{k: v for k, v in case.body.items() if k not in ("type", "workspaceId")},
                    "configuration": {"cpuCores": 1, "memoryGB": 1, "storageGB": 1},
                }

        def after_call(self, response, case):
            if response.status_code < 300:
                followed.add((case.method.upper(), case.path))
            if (case.method.upper(), case.path) == ("POST", "/v1/workstations") and response.status_code == 201:
                # As a client would: provisioning finishes before the next step.
                client = target.app.test_client()
                wait_for_status(client, {"Authorization": f"Bearer {token}"}, response.json()["id"], "stopped")

    try:
        Workflow.run(
            settings=settings(
                max_examples=STATEFUL_EXAMPLES,
                stateful_step_count=15,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            )
        )
    finally:
        target.close()
    # The machine did walk the life cycle, not only its first step.
    assert {
        ("POST", "/v1/workstations"),
        ("POST", "/v1/workstations/{workstation_id}/launch"),
        ("POST", "/v1/workstations/{workstation_id}/stop"),
        ("PATCH", "/v1/workstations/{workstation_id}"),
        ("DELETE", "/v1/workstations/{workstation_id}"),
    } <= followed, followed
