"""The warm-start TTS WebUI's package: the service, its engines and frontend, the HTTP API and the page."""

from glmtts.gradio_stubs import skip_stub_rewriting

skip_stub_rewriting()  # Gradio imported after this package skips rewriting its type stubs (3 s of every start)
