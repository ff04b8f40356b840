"""Screen recordings of a running workstation: start, stop, list, download, delete."""

from __future__ import annotations

import flask
from flask import g
from flask.views import MethodView

from cwhost.api.common import ApiBlueprint, error_responses, list_body
from cwhost.api.components import services
from cwhost.api.recording_schemas import RecordingListSchema, RecordingSchema, RecordingStartSchema

blp = ApiBlueprint(
    "recordings",
    __name__,
    url_prefix="/v1/workstations",
    description="Screen recordings of a running workstation, as WebM videos counted in the account's storage.",
)


def _shown(row: dict) -> dict:
    return {**row, "format": "webm"}


@blp.route("/<string:workstation_id>/recordings")
class RecordingCollection(MethodView):
    @blp.response(200, RecordingListSchema)
    @error_responses(blp, 404)
    @blp.doc(operationId="listRecordings")
    def get(self, workstation_id):
        """The workstation's recordings, oldest first."""
        return list_body([_shown(row) for row in services().recordings.listed(g.principal, workstation_id)])

    @blp.arguments(RecordingStartSchema)
    @blp.response(201, RecordingSchema)
    @error_responses(blp, 400, 403, 404, 409, 415, 422)
    @blp.doc(operationId="startRecording")
    def post(self, body, workstation_id):
        """Start recording the screen (pictures taken by the hypervisor: nothing runs in the guest); it
        answers once the first picture is taken, so what is done after the answer is in the video.
        403 when the account's storage has no room, 409 while this workstation is recorded already."""
        return _shown(services().recordings.start(g.principal, workstation_id, body.get("frames_per_second")))


@blp.route("/<string:workstation_id>/recordings/<string:recording_id>")
class RecordingById(MethodView):
    @blp.response(200, RecordingSchema)
    @error_responses(blp, 404)
    @blp.doc(operationId="getRecording")
    def get(self, workstation_id, recording_id):
        """One recording."""
        return _shown(services().recordings.one(g.principal, workstation_id, recording_id))

    @blp.response(204)
    @error_responses(blp, 404)
    @blp.doc(operationId="deleteRecording")
    def delete(self, workstation_id, recording_id):
        """Delete it (stopping it first if it records), and its file: its storage is the account's again."""
        services().recordings.delete(g.principal, workstation_id, recording_id)


@blp.route("/<string:workstation_id>/recordings/<string:recording_id>/stop", methods=["POST"])
@blp.response(200, RecordingSchema)
@error_responses(blp, 400, 404)
@blp.doc(operationId="stopRecording")
def stop(workstation_id, recording_id):
    """Stop it; answers once its video is whole (ready). 400 if it has ended already."""
    return _shown(services().recordings.stop(g.principal, workstation_id, recording_id))


@blp.route("/<string:workstation_id>/recordings/<string:recording_id>/content")
@blp.doc(
    operationId="downloadRecording",
    responses={200: {"description": "The video.", "content": {"video/webm": {"schema": {"type": "string"}}}}},
)
@error_responses(blp, 400, 404)
def content(workstation_id, recording_id):
    """The video (WebM); 400 while it still records."""
    path = services().recordings.content(g.principal, workstation_id, recording_id)
    return flask.send_file(path, mimetype="video/webm", as_attachment=True, download_name=path.name, max_age=0)
