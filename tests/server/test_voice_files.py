"""Voices moved between machines over HTTP: export as one file, import elsewhere, rename, hear the prompt.

Two real apps: the session's app_server ("here") and a second one started for this module ("there"),
each with its own outputs folder, as two machines would have.
"""

import io
import zipfile

import httpx
import numpy as np
import pytest
import soundfile as sf

from .conftest import ROOT, launched_app, speak

PROMPT = ROOT / "examples" / "prompt" / "libri_1998.flac"


@pytest.fixture(scope="module")
def there(tmp_path_factory):
    with launched_app(tmp_path_factory.mktemp("there-outputs")) as (url, _):
        yield url


def test_a_voice_saved_here_is_exported_imported_there_renamed_and_spoken(app_server, there):
    here = app_server.url
    with PROMPT.open("rb") as prompt:
        created = httpx.post(
            f"{here}/v1/voices", files={"file": prompt}, data={"name": "Traveller", "prompt_text": ""}, timeout=120
        )
    assert created.status_code == 201, created.text
    voice_id = created.json()["id"]

    exported = httpx.get(f"{here}/v1/voices/{voice_id}/export", timeout=60)
    assert exported.status_code == 200 and exported.headers["content-type"] == "application/zip"
    assert 'filename="traveller.voice.zip"' in exported.headers["content-disposition"]
    assert set(zipfile.ZipFile(io.BytesIO(exported.content)).namelist()) == {"voice.json", "prompt.wav", "features.npz"}

    files = {"file": ("traveller.voice.zip", exported.content, "application/zip")}
    imported = httpx.post(f"{there}/v1/voices/import", files=files, timeout=120)
    assert imported.status_code == 201, imported.text
    assert imported.json()["name"] == "Traveller" and imported.json()["features"] == "computed"
    assert httpx.post(f"{there}/v1/voices/import", files=files, timeout=120).status_code == 409

    here_prompt, _ = sf.read(io.BytesIO(httpx.get(f"{here}/v1/voices/{voice_id}/prompt").content), dtype="float32")
    there_prompt, _ = sf.read(io.BytesIO(httpx.get(f"{there}/v1/voices/{imported.json()['id']}/prompt").content), dtype="float32")
    np.testing.assert_allclose(there_prompt, here_prompt, atol=2 / 32768)  # 16-bit wav both ways

    renamed = httpx.patch(f"{there}/v1/voices/{imported.json()['id']}", json={"name": "Wanderer"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Wanderer"
    assert speak(there, "A voice from another machine.", voice="wanderer").status_code == 200
    assert httpx.patch(f"{there}/v1/voices/{imported.json()['id']}", json={"name": "alloy"}).status_code == 409
    assert httpx.patch(f"{there}/v1/voices/libri_367", json={"name": "Mine"}).status_code == 403
    assert httpx.patch(f"{there}/v1/voices/nobody-00000000", json={"name": "Mine"}).status_code == 404
    assert httpx.patch(f"{there}/v1/voices/{imported.json()['id']}", json={"nom": "x"}).status_code == 400


def test_what_is_not_a_voice_file_gets_a_clear_400(there):
    for name, content in (("x.zip", b"not a zip"), ("x.zip", b"PK\x05\x06" + b"\0" * 18)):
        refused = httpx.post(f"{there}/v1/voices/import", files={"file": (name, content)}, timeout=60)
        assert refused.status_code == 400 and "voice file" in refused.json()["error"]["message"]
    huge = httpx.post(f"{there}/v1/voices/import", files={"file": ("x.zip", b"\0" * (21 * 2**20))}, timeout=60)
    assert huge.status_code == 413
