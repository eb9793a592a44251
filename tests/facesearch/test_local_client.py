"""The command line's in-process client (facesearch.local) answers a call as the server does: the same model, the
same numbers, and a refusal of the same kind, code and fields. Each command is written once against either."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from facesearch.client import ApiError, BadRequest, Call, FaceSearch, NotFound, Routes
from facesearch.local import LocalFaceSearch
from facesearch.settings import Settings
from index.errors import GalleryError
from tests.conftest import lfw_photo
from tests.helpers import group

VOLATILE = {"took_ms"}


def plain(value: Any) -> Any:
    """An answer as JSON, its timing left out and its floats to 4 places (two processes' ONNX Runtime)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return round(value, 4) if isinstance(value, float) else value


def refusal(fs: Any, call: Call[Any]) -> tuple[type[ApiError], int, str, dict[str, Any]]:
    with pytest.raises(ApiError) as e:
        fs.send(call)
    return type(e.value), e.value.status, e.value.code, e.value.extra


def test_in_process_answers_as_the_server(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    local_data, served = tmp_path / "local", tmp_path / "served"
    blank = tmp_path / "blank.png"
    Image.new("RGB", (160, 160), (128, 128, 128)).save(blank)
    with LocalFaceSearch(Settings(data_dir=local_data), gallery="create") as local:
        enrolled = local.send(Routes.enroll("colin", lfw_photo("Colin_Powell", 1), lfw_photo("Colin_Powell", 2)))
        local.send(Routes.enroll("tony", lfw_photo("Tony_Blair", 1)))
    assert enrolled.identity == "colin" and len(enrolled.faces) == 2
    shutil.copytree(local_data, served)  # the same gallery, one copy each
    server = server_factory(served)
    server.wait_ready()

    both_photos = group(lfw_photo("Colin_Powell", 3), lfw_photo("Tony_Blair", 2))
    answered = [
        Routes.search(both_photos),
        Routes.search(lfw_photo("Serena_Williams", 1), k=1),
        Routes.verify(lfw_photo("Colin_Powell", 4), identity="colin"),
        Routes.verify(lfw_photo("Colin_Powell", 4), lfw_photo("Tony_Blair", 3)),
        Routes.identity("colin"),
    ]
    refused = [
        Routes.verify(lfw_photo("Colin_Powell", 4), identity="nobody"),  # 404 not_found
        Routes.verify(lfw_photo("Colin_Powell", 4), blank),  # 422 no_face, the side named
        Routes.search(b"not a photo"),  # 400 invalid_image
        Routes.enroll("pair", group(lfw_photo("Colin_Powell", 5), lfw_photo("Tony_Blair", 4))),  # multiple_faces
        Routes.photo("0" * 32),  # 404
    ]
    with LocalFaceSearch(Settings(data_dir=local_data)) as local, FaceSearch(server.url) as remote:
        search = local.send(answered[0])
        assert {f.identity for f in search.faces} == {"colin", "tony"}  # what is compared is a real answer
        for call in answered:
            assert plain(local.send(call).model_dump()) == plain(remote.send(call).model_dump()), call.route
        kinds = [refusal(local, call) for call in refused]
        assert kinds == [refusal(remote, call) for call in refused]
    assert [k[:3] for k in kinds] == [(NotFound, 404, "not_found"), (BadRequest, 422, "no_face"),
                                      (BadRequest, 400, "invalid_image"), (BadRequest, 422, "multiple_faces"),
                                      (NotFound, 404, "not_found")]
    assert kinds[1][3] == {"source": "image2"} and kinds[3][3]["file_index"] == 0


def test_a_command_that_reads_never_creates_a_gallery(tmp_path: Path) -> None:
    with pytest.raises(GalleryError, match="no gallery in"):
        LocalFaceSearch(Settings(data_dir=tmp_path / "empty"))
    assert not (tmp_path / "empty").exists()
    with LocalFaceSearch(Settings(data_dir=tmp_path / "empty"), gallery=None) as local:  # two photos: none needed
        verdict = local.send(Routes.verify(lfw_photo("Colin_Powell", 1), lfw_photo("Colin_Powell", 2)))
    assert verdict.same_person and not (tmp_path / "empty").exists()


def test_routes_only_a_server_answers_are_refused_in_process(tmp_path: Path) -> None:
    with LocalFaceSearch(Settings(data_dir=tmp_path / "data"), gallery="create") as local, \
            pytest.raises(ApiError) as e:
        local.send(Routes.clusters())
    assert e.value.code == "not_in_process" and "--url" in e.value.detail
