"""schemathesis hooks for the live contract run (SCHEMATHESIS_HOOKS=tests.contract.hooks).

A valid Idempotency-Key the fuzzer generates is made unique per request.
Hypothesis draws small values ("0", "00") over and over, so its keys collide
across unrelated requests; cwhost then replays the first answer, as the
header promises, and the replayed resource may since have been deleted by
another step, which schemathesis cannot know ("created resource not found").
Invalid keys are left as drawn, so that their refusal is still tested.
"""

from __future__ import annotations

import re
import uuid

import schemathesis

from cwhost.api.idempotency import HEADER, KEY_PATTERN


@schemathesis.hook
def map_headers(ctx, headers):
    key = (headers or {}).get(HEADER)
    if isinstance(key, str) and re.fullmatch(KEY_PATTERN, key):
        headers[HEADER] = uuid.uuid4().hex
    return headers
