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


# An OpenSSH public key line as the document states its shape: a key type the
# images' sshd takes, the key in base64, an optional comment with no control
# character. cwhost.accounts.ssh_keys also parses the key itself, and refuses all this refuses.
SSH_PUBLIC_KEY_PATTERN = (
    r"^\s*(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com"
    r"|sk-ecdsa-sha2-nistp256@openssh\.com)[ \t]+[A-Za-z0-9+/]+={0,2}([ \t][^\x00-\x08\x0a-\x1f\x7f]*)?\s*$"
)

# A page a browser opens: an absolute URL (scheme first), so never an option, and one line.
START_URL_PATTERN = r"^([a-zA-Z][a-zA-Z0-9+.-]*:[^\x00-\x1f\x7f]+)?$"
# A Debian mirror as mmdebstrap takes it: an http(s) or file URI, with no space (a second argument) in it.
MIRROR_PATTERN = r"^((https?|file)://[^\s\x00-\x1f\x7f]+)?$"

# An account's name: what `cwhost keys create --account` takes and
# PUT /v1/accounts/{name}/credits names.
ACCOUNT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
