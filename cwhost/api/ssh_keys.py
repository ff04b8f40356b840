"""/v1/account/ssh-keys: the caller's SSH public keys."""

from __future__ import annotations

from flask import g
from flask.views import MethodView

from cwhost.accounts.ssh_keys import SshKeys
from cwhost.api.common import ApiBlueprint, error_responses, list_body
from cwhost.api.components import services
from cwhost.api.query_args import PageArgsSchema
from cwhost.api.ssh_key_schemas import SshKeyCreateSchema, SshKeyListSchema, SshKeySchema

blp = ApiBlueprint("ssh_keys", __name__, url_prefix="/v1/account/ssh-keys", description="The account's SSH keys.")


def _keys() -> SshKeys:
    return services().ssh_keys


@blp.route("")
class SshKeyCollection(MethodView):
    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, SshKeyListSchema)
    @error_responses(blp, 400)
    @blp.doc(operationId="listSshKeys")
    def get(self, args):
        """The account's SSH public keys, oldest first."""
        after = int(args["after"]) if "after" in args else None
        items, next_cursor = _keys().page(g.principal, args["limit"], after)
        return list_body(items, next_cursor)

    @blp.arguments(SshKeyCreateSchema)
    @blp.response(201, SshKeySchema)
    @error_responses(blp, 400, 403, 413, 415)
    @blp.doc(operationId="addSshKey")
    def post(self, body):
        """Register an SSH public key; one that is not a valid OpenSSH public key is 400, saying why."""
        return _keys().add(g.principal, body["name"], body["public_key"])


@blp.route("/<string:key_id>", methods=["DELETE"])
@blp.response(204)
@error_responses(blp, 404)
@blp.doc(operationId="deleteSshKey")
def delete_ssh_key(key_id):
    """Remove one of the account's SSH keys."""
    _keys().delete(g.principal, key_id)
