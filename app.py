"""The warm-start TTS WebUI: importing this module loads and warms the whole pipeline.

Run as a script (`python app.py`, or `bash start_app.sh`) it opens the port first, so `/health` answers
and `/ready` says 503 while the models load and warm up, then serves the UI and the HTTP API on one port.
"""

from __future__ import annotations

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import logging  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import gradio as gr  # noqa: E402
import uvicorn  # noqa: E402

from glmtts.api_v1 import mount_v1  # noqa: E402
from glmtts.pipeline import build_pipeline  # noqa: E402
from glmtts.security import gradio_auth, warn_if_exposed  # noqa: E402
from glmtts.server import create_api  # noqa: E402
from glmtts.settings import Settings  # noqa: E402
from glmtts.ui import build_ui  # noqa: E402

_LOGGER = logging.getLogger("app")


def serve_in_background(application, settings: Settings) -> uvicorn.Server:
    server = uvicorn.Server(uvicorn.Config(application, host=settings.host, port=settings.port, log_level="warning"))
    threading.Thread(target=server.run, name="http", daemon=True).start()
    while not server.started and not server.should_exit:
        time.sleep(0.05)
    if not server.started:
        raise SystemExit(f"Could not listen on {settings.host}:{settings.port} (is the port in use?)")
    _LOGGER.info("Listening on http://%s:%d (warming up)", settings.host, settings.port)
    return server


logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
settings = Settings.from_args(sys.argv[1:] if __name__ == "__main__" else [])
warn_if_exposed(settings)
pipeline = build_pipeline(settings)
pipeline.scheduler.max_waiting = settings.max_queue
started = time.perf_counter()
api = create_api(pipeline)
_voices, jobs = mount_v1(api, pipeline, settings)  # saved voices registered and interrupted jobs recovered before warm-up
ui = build_ui(pipeline, jobs)
ui.has_launched = True  # Gradio checks that input files were uploaded only in launched apps, not mounted ones
app = gr.mount_gradio_app(
    api,
    ui,
    path="/",
    allowed_paths=[str(settings.outputs)],
    max_file_size=f"{settings.max_upload_mb}mb",
    footer_links=["api"],
    auth=gradio_auth(settings),
    auth_message="Enter any user name and the server's API key (GLMTTS_API_KEY) as the password.",
)
server = serve_in_background(app, settings) if __name__ == "__main__" else None
try:
    pipeline.load()
    pipeline.warmup()
except Exception as error:
    _LOGGER.exception("Start-up failed")
    raise SystemExit(f"Start-up failed: {type(error).__name__}: {error}") from error
_LOGGER.info("Ready in %.1f s: %s", time.perf_counter() - started, pipeline.status())

if server is not None:
    print(f"Ready: http://{settings.host}:{settings.port}", flush=True)
    try:
        while not server.should_exit:
            time.sleep(0.5)
    except KeyboardInterrupt:
        server.should_exit = True
