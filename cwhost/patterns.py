"""Text patterns matched against the whole value.

The patterns are written ``^…$`` because the OpenAPI document carries them and
JSON Schema reads ``$`` as the end of the text. Python's ``re.match`` reads
the same ``$`` as "the end, or just before a final newline", so ``"abc\\n"``
would pass a name rule; every check here uses ``fullmatch`` instead.
"""

from __future__ import annotations

from marshmallow import validate


class FullMatch(validate.Regexp):
    """marshmallow's Regexp, but the whole value must match."""

    def __call__(self, value):
        if self.regex.fullmatch(value) is None:
            raise validate.ValidationError(self._format_error(value))
        return value


# An account's name: what `cwhost keys create --account` takes and
# PUT /v1/accounts/{name}/credits names.
ACCOUNT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
