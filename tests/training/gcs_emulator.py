"""`python gcs_emulator.py [gcp-storage-emulator arguments]`: the emulator, with object generations on downloads.

gcp-storage-emulator's media downloads carry no `x-goog-generation` header and
ignore `ifGenerationMatch` / `ifGenerationNotMatch`. Google Cloud Storage sends
the header, answers a matching `ifGenerationNotMatch` with 304 Not Modified and
a failed `ifGenerationMatch` with 412. tensorstore (under orbax) rereads an
OCDBT manifest with `ifGenerationNotMatch=<the generation it wrote>`; the
emulator's plain 200 without a generation made it fail now and then with
"Malformed StorageGeneration". This wrapper adds what the tests need of GCS.

It also plays a bucket that stops taking writes: while the file named by
`$GCS_EMULATOR_DENY_WRITES` exists, every request but a read (GET) is answered
403 Forbidden, as GCS answers a caller who lost write permission.
"""

import json
import os
import sys
from http import HTTPStatus

from gcp_storage_emulator import server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

_download = objects.download


def _query(request, name):
    values = request.query.get(name)
    return values[0] if values else None


def download(request, response, storage, *args, **kwargs):
    try:
        obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    except NotFound:
        return _download(request, response, storage, *args, **kwargs)
    generation = str(obj["generation"])
    if _query(request, "ifGenerationNotMatch") == generation:
        response.status = HTTPStatus.NOT_MODIFIED
        return None
    match = _query(request, "ifGenerationMatch")
    if match is not None and match != generation:
        response.status = HTTPStatus.PRECONDITION_FAILED
        return None
    response["x-goog-generation"] = generation
    response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))
    return _download(request, response, storage, *args, **kwargs)


def _deny_writes() -> bool:
    flag = os.environ.get("GCS_EMULATOR_DENY_WRITES")
    return bool(flag) and os.path.exists(flag)


_handle = server.Router.handle


def handle(self, method):
    if method == server.GET or not _deny_writes():
        return _handle(self, method)
    handler = self._request_handler
    body = json.dumps({"error": {"code": 403, "message": "Access denied: the caller does not have "
                                 "storage.objects.create access to the bucket (emulated)."}}).encode()
    handler.close_connection = True  # the request body is left unread
    handler.send_response(HTTPStatus.FORBIDDEN.value, HTTPStatus.FORBIDDEN.phrase)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(body)


# Before the server module builds its routing table from these functions.
objects.download = download
server.Router.handle = handle

if __name__ == "__main__":
    from gcp_storage_emulator.__main__ import main

    sys.exit(main(sys.argv[1:]))
