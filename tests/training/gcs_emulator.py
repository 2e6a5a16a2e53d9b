"""`python gcs_emulator.py [gcp-storage-emulator arguments]`: the emulator, with object generations on downloads.

gcp-storage-emulator's media downloads carry no `x-goog-generation` header and
ignore `ifGenerationMatch` / `ifGenerationNotMatch`. Google Cloud Storage sends
the header, answers a matching `ifGenerationNotMatch` with 304 Not Modified and
a failed `ifGenerationMatch` with 412. tensorstore (under orbax) rereads an
OCDBT manifest with `ifGenerationNotMatch=<the generation it wrote>`; the
emulator's plain 200 without a generation made it fail now and then with
"Malformed StorageGeneration". This wrapper adds what the tests need of GCS.
"""

import sys
from http import HTTPStatus

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


# Before the server module builds its routing table from these functions.
objects.download = download

if __name__ == "__main__":
    from gcp_storage_emulator.__main__ import main

    sys.exit(main(sys.argv[1:]))
