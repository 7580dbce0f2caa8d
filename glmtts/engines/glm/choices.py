"""The GLM-TTS settings' allowed values, in one place: the engine checks them, the flags and the
environment variables offer them (no torch import, so the settings read them cheaply)."""

DTYPES = ("fp32", "bf16", "fp16")  # precision of the LLM and the flow
DECODES = ("fast", "reference")  # fast: static KV cache and captured steps; reference: upstream's computation
CAPTURES = ("graphs", "compile", "eager")  # graphs: CUDA graph of the eager step; compile: of the compiled step on CUDA
