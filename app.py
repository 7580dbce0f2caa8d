"""The warm-start TTS WebUI: importing this module loads and warms the whole service.

Three things run side by side at start-up: the text frontend loads in a process of its own, the
models load and warm up in a thread (native code that lets the GIL go), and this thread imports and
builds the web stack (Python that holds it). Run as a script (`python app.py`, or `bash start_app.sh`)
it then opens the port, so `/health` answers and `/ready` says 503 while the models finish, and sends
itself requests through every layer a client's request takes; `/ready` says 200 once they went through.
"""

from __future__ import annotations

import gc
import os

gc.disable()  # no cycle collection while start-up builds its long-lived objects: imports run faster

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import logging
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from glmtts.frontend.process import FrontendProcess
from glmtts.settings import Settings

started = time.perf_counter()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
settings = Settings.from_args(sys.argv[1:] if __name__ == "__main__" else [])
frontend = FrontendProcess(settings.replace_dict, settings.cache_dir)  # loads on the other core while this process imports

from glmtts.service import build_service

if settings.wyoming_port is not None:  # Home Assistant's protocol, beside HTTP (glmtts.wyoming_server)
    from glmtts.wyoming_server import exposure_refusal, with_wyoming

    if refusal := exposure_refusal(settings):
        raise SystemExit(refusal)
service = build_service(settings, frontend)


def load_and_warm() -> None:
    service.load()
    service.warmup()


# The models load and warm up in a thread while the web stack imports and builds: that is Python
# holding the GIL, this is mostly native code (onnxruntime, LiteRT, Praat) that lets it go.
warming = ThreadPoolExecutor(1, thread_name_prefix="warm-up").submit(load_and_warm)

import gradio as gr  # after glmtts, which makes its import 3 s shorter (glmtts/gradio_stubs.py)
import uvicorn

from glmtts.http import create_api
from glmtts.http.security import gradio_auth, warn_if_exposed
from glmtts.http.warmup import warm_routes
from glmtts.ui import PAGE_I18N, build_ui

_LOGGER = logging.getLogger("app")


def serve_in_background(application, settings: Settings) -> uvicorn.Server:
    # X-Forwarded-For and -Proto are believed only from the proxies named (uvicorn's default believes 127.0.0.1,
    # so any local process, or a client through a local tunnel, could choose its address for the rate limit).
    proxies = ",".join(settings.trusted_proxies)
    config = uvicorn.Config(
        application,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
    )
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, name="http", daemon=True).start()
    while not server.started and not server.should_exit:
        time.sleep(0.01)
    if not server.started:
        raise SystemExit(f"Could not listen on {settings.host}:{settings.port} (is the port in use?)")
    _LOGGER.info("Listening on http://%s:%d (warming up)", settings.host, settings.port)
    return server


warn_if_exposed(settings)
api = create_api(service)
ui = build_ui(service)
ui.has_launched = True  # Gradio checks that input files were uploaded only in launched apps, not mounted ones
app = gr.mount_gradio_app(  # no allowed_paths: nothing under outputs/ is served except what a session's callbacks return
    api,
    ui,
    path="/",
    max_file_size=f"{settings.max_upload_mb}mb",
    footer_links=["api"],
    i18n=PAGE_I18N,  # the page's words in English and Chinese (glmtts/ui/i18n.py)
    auth=gradio_auth(settings),
    auth_message="Enter any user name and the server's API key (GLMTTS_API_KEY) as the password. "
    "用户名任意，密码为服务器的 API 密钥（GLMTTS_API_KEY）。",
)
if settings.wyoming_port is not None:  # started and stopped with the HTTP server, in its event loop
    app.router.lifespan_context = with_wyoming(app.router.lifespan_context, service)
server = serve_in_background(app, settings) if __name__ == "__main__" else None
try:
    warming.result()
    if server is not None:
        local_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        service.timings["http_warmup_s"] = warm_routes(f"http://{local_host}:{settings.port}", service.warmup_token)
except Exception as error:
    _LOGGER.exception("Start-up failed")
    raise SystemExit(f"Start-up failed: {type(error).__name__}: {error}") from error
gc.freeze()  # what start-up built lives as long as the process: later collections skip it (collecting first
gc.enable()  # would find a few thousand objects in 0.4 s)
service.mark_ready()
service.timings["ready_s"] = time.perf_counter() - started
_LOGGER.info("Ready in %.1f s: %s", service.timings["ready_s"], service.status())

if server is not None:
    print(f"Ready: http://{settings.host}:{settings.port}", flush=True)
    try:
        while not server.should_exit:
            time.sleep(0.5)
    except KeyboardInterrupt:
        server.should_exit = True
    service.shutdown()
