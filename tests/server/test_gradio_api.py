"""The page's API through the real gradio_client: named parameters with defaults, the voices
enumerated, one endpoint per action, and none of the page's writes (replace dictionary, caches)."""

import httpx
import pytest
import soundfile as sf

API_ENDPOINTS = {"/synthesize", "/to_phonemes", "/batch", "/show_job", "/resume_job", "/cancel_job"}
PAGE_ONLY = ["/save_replace_dict", "/clear_caches", "/validate_replace_dict", "/current_voices", "/jobs_overview"]


@pytest.fixture(scope="module")
def client(app_server):
    from gradio_client import Client

    return Client(app_server.url + "/", verbose=False)


@pytest.fixture(scope="module")
def api(client) -> dict:
    return client.view_api(print_info=False, return_format="dict")


def parameters(api: dict, endpoint: str) -> dict[str, dict]:
    return {p["parameter_name"]: p for p in api["named_endpoints"][endpoint]["parameters"]}


def test_synthesize_with_named_arguments_returns_a_wav(client):
    from glmtts.ui import LIVE_PLAYBACK

    outputs = client.predict(text="Named arguments are enough.", voice="libri_367", seed=7, api_name="/synthesize")
    *live, wav, timings, status, normalized = outputs  # the live player's last piece first, where there is one
    assert len(live) == LIVE_PLAYBACK
    samples, rate = sf.read(wav)
    assert rate == 24000 and len(samples) / rate > 0.8
    assert status.startswith("Done") and timings["audio_s"] == pytest.approx(len(samples) / rate, abs=0.01)
    assert "enough" in normalized.lower()


def test_the_api_lists_one_endpoint_per_action_and_no_writes(api):
    assert set(api["named_endpoints"]) == API_ENDPOINTS
    assert not api["unnamed_endpoints"]


@pytest.mark.parametrize("endpoint", PAGE_ONLY)
def test_the_client_does_not_offer_the_pages_own_events(client, endpoint):
    with pytest.raises(ValueError, match="Cannot find a function"):
        client.predict(api_name=endpoint)


def test_synthesize_names_its_parameters_and_only_text_is_required(api):
    named = parameters(api, "/synthesize")
    assert list(named)[:4] == ["text", "prompt_audio", "voice", "prompt_text"]
    assert {"seed", "sampling", "top_k", "top_p", "temperature", "speed", "sample_rate", "use_cache", "use_phoneme"} <= set(named)
    assert not any(name.startswith("param_") for name in named)
    assert [name for name, p in named.items() if not p["parameter_has_default"]] == ["text"]
    assert named["seed"]["parameter_default"] == 42 and named["prompt_audio"]["parameter_default"] is None


def test_the_voice_parameter_enumerates_the_voices(api, app_server):
    choices = parameters(api, "/synthesize")["voice"]["type"]["enum"]
    builtin = [v["id"] for v in httpx.get(f"{app_server.url}/v1/voices", timeout=30).json()["voices"] if v["builtin"]]
    assert builtin and set(builtin) <= set(choices)
