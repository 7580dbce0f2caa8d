"""The WebUI's System tab: the service's status as labelled, grouped rows with units, and memory plots.

One mapping (`FIELDS`) names each status key; a key it does not know is still shown, under its
parent's group or under "Other", with a name made from the key, so a new status key never breaks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import gradio as gr
import pandas as pd

from glmtts.service import Service

STATUS_COLUMNS = ["Group", "What", "Value"]
CLEARED_COLUMNS = ["What", "Before (MiB)", "After (MiB)"]
MEMORY_AXIS, QUEUE_AXIS = "Resident memory (MiB)", "Requests waiting"
REFRESH_S = 10
GROUPS = ["Engine", "Timings", "Memory", "Queue", "Voices", "Other"]


@dataclass(frozen=True)
class Field:
    """How one status value reads: its group, its name and its unit ("s", "MiB" or none)."""

    group: str
    label: str
    unit: str = ""


FIELDS = {
    "ready": Field("Engine", "Ready"),
    "engine": Field("Engine", "Engine"),
    "engine_reason": Field("Engine", "Why this engine"),
    "device": Field("Engine", "Device"),
    "dtype": Field("Engine", "Number format"),
    "sample_rates": Field("Engine", "Sample rates (Hz)"),
    "checkpoint": Field("Engine", "Checkpoint"),
    "llm_layers": Field("Engine", "LLM layers"),
    "llm_hidden": Field("Engine", "LLM hidden size"),
    "llm_vocab": Field("Engine", "LLM vocabulary"),
    "max_batch": Field("Engine", "Largest batch"),
    "decode": Field("Engine", "Decoding"),
    "stream": Field("Engine", "Streams by default"),
    "decode_capture": Field("Engine", "Decoder graph capture"),
    "decode_sync_every": Field("Engine", "Decoder syncs every (steps)"),
    "decode_buckets": Field("Engine", "Decoder buckets"),
    "fallbacks": Field("Engine", "Fallbacks"),
    "pid": Field("Engine", "Process id"),
    "replica": Field("Engine", "Replica"),
    "shared_state": Field("Engine", "Shared state"),
    "kv_cache_mib": Field("Memory", "KV cache", "MiB"),
    "timings.ready_s": Field("Timings", "Start to ready", "s"),
    "timings.engine_load_s": Field("Timings", "Engine load", "s"),
    "timings.frontend_load_s": Field("Timings", "Text frontend load", "s"),
    "timings.frontend_wait_s": Field("Timings", "Wait for the text frontend", "s"),
    "timings.voices_load_s": Field("Timings", "Voices load", "s"),
    "timings.voices_warmup_s": Field("Timings", "Voices analysis", "s"),
    "timings.engine_warmup_s": Field("Timings", "Warm-up synthesis", "s"),
    "timings.shared_state_check_s": Field("Timings", "Shared state check", "s"),
    "timings.http_warmup_s": Field("Timings", "HTTP routes warm-up", "s"),
    "memory.rss_mib": Field("Memory", "Server process", "MiB"),
    "memory.frontend_rss_mib": Field("Memory", "Text frontend process", "MiB"),
    "memory.vram_allocated": Field("Memory", "VRAM allocated", "MiB"),
    "memory.vram_reserved": Field("Memory", "VRAM reserved", "MiB"),
    "memory.vram_peak": Field("Memory", "VRAM peak", "MiB"),
    "memory.kv_cache": Field("Memory", "KV cache", "MiB"),
    "queue_waiting": Field("Queue", "Requests waiting for the device"),
    "device_busy": Field("Queue", "Requests on the device"),
    "syntheses_active": Field("Queue", "Syntheses in progress"),
    "batch_items_pending": Field("Queue", "Batch items pending"),
    "builtin_voices": Field("Voices", "Built-in voices"),
    "saved_voices": Field("Voices", "Saved voices"),
    "cached_voices": Field("Voices", "Analysed voices in memory"),
    "voices": Field("Voices", "Embedded voice models"),
}
# A nested value's keys that FIELDS does not list: their group, a name prefix and the unit they share.
SECTIONS = {
    "timings": Field("Timings", "", "s"),
    "load_seconds": Field("Timings", "Load", "s"),
    "memory": Field("Memory", "", "MiB"),
    "disk_mib": Field("Engine", "On disk", "MiB"),
}


def humanize(key: str) -> str:
    """`frontend_rss_mib` -> "Frontend rss": the key without its unit suffix, in words."""
    for suffix in ("_mib", "_s"):
        key = key.removesuffix(suffix)
    words = key.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def format_value(value: object, unit: str) -> str:
    """Seconds with one decimal, MiB whole; lists and dicts in one line; absent as a dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)) and unit:
        return f"{value:,.1f} s" if unit == "s" else f"{value:,.0f} {unit}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "none"
    if isinstance(value, dict):
        return "; ".join(f"{key}: {format_value(item, '')}" for key, item in value.items())
    return str(value)


def field_of(key: str, parent: str | None) -> Field:
    path = f"{parent}.{key}" if parent else key
    if path in FIELDS:
        return FIELDS[path]
    section = SECTIONS.get(parent or "")
    if section is not None:
        return Field(section.group, f"{section.label} {humanize(key).lower()}".strip().capitalize(), section.unit)
    return Field("Other", humanize(path.replace(".", " ")))


def status_rows(status: dict[str, object]) -> pd.DataFrame:
    """The status as (group, what, value) rows, by group, each group in the order FIELDS lists its keys."""
    rows: list[tuple[Field, object]] = []
    for key, value in status.items():
        if isinstance(value, dict) and key in SECTIONS:
            rows += [(field_of(name, key), item) for name, item in value.items()]
        else:
            rows.append((field_of(key, None), value))
    order = {field.label: index for index, field in enumerate(FIELDS.values())}
    rows.sort(key=lambda row: (GROUPS.index(row[0].group), order.get(row[0].label, len(order))))
    return pd.DataFrame([[f.group, f.label, format_value(v, f.unit)] for f, v in rows], columns=STATUS_COLUMNS)


def cleared_rows(before: dict[str, float], after: dict[str, float]) -> pd.DataFrame:
    names = [name for name in before if name in after] + [name for name in after if name not in before]
    rows = [[field_of(name, "memory").label, _mib(before.get(name)), _mib(after.get(name))] for name in names]
    return pd.DataFrame(rows, columns=CLEARED_COLUMNS)


def history_frame(points: list[tuple[float, float, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "time": [datetime.fromtimestamp(t) for t, _rss, _waiting in points],
            MEMORY_AXIS: [round(rss) for _t, rss, _waiting in points],
            QUEUE_AXIS: [waiting for _t, _rss, waiting in points],
        }
    )


def _mib(value: float | None) -> int | None:
    return None if value is None else round(value)


def build_system_tab(service: Service, demo: gr.Blocks) -> None:
    """The System tab's widgets and events (inside an open `gr.Tab`)."""
    status_view = gr.Dataframe(
        pd.DataFrame(columns=STATUS_COLUMNS), label="Status", interactive=False, elem_id="system-status", wrap=True
    )
    clock = "%H:%M:%S"  # Vega's own tick labels for a few minutes of readings are bare fractions (".500")
    memory_plot = gr.LinePlot(
        x="time",
        y=MEMORY_AXIS,
        title="Resident memory of the server, last minutes",
        x_title="Time",
        y_title=MEMORY_AXIS,
        y_axis_format=",d",
        height=220,
        x_axis_format=clock,
        elem_id="system-memory",
    )
    queue_plot = gr.LinePlot(
        x="time",
        y=QUEUE_AXIS,
        title="Requests waiting for the device",
        x_title="Time",
        y_title=QUEUE_AXIS,
        y_axis_format="d",
        height=180,
        x_axis_format=clock,
        elem_id="system-queue",
    )
    with gr.Row():
        refresh = gr.Button("Refresh status")
        clear = gr.Button("Clear VRAM / caches", variant="stop", elem_id="clear-vram")
    cleared = gr.Dataframe(
        pd.DataFrame(columns=CLEARED_COLUMNS),
        label="Memory before and after clearing",
        interactive=False,
        visible=False,
        elem_id="cleared",
    )
    views = [status_view, memory_plot, queue_plot]

    def update():
        history = history_frame(list(service.history))
        return status_rows(service.status()), history, history

    def clear_caches():
        return gr.Dataframe(cleared_rows(*service.clear_caches()), visible=True)

    refresh.click(update, None, views, api_name=False)
    clear.click(clear_caches, None, cleared, api_name="clear_caches")
    gr.Timer(REFRESH_S).tick(update, None, views, api_name=False, show_progress="hidden")
    demo.load(update, None, views, api_name=False)
