"""The WebUI's System tab: the service's status as labelled, grouped rows with units, and memory plots.

One mapping (`FIELDS`) names each status key; a key it does not know is still shown, under its
parent's group or under "Other", with a name made from the key, so a new status key never breaks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import gradio as gr
import pandas as pd

from glmtts.ui.i18n import label, language_of, page_text, server_phrase
from glmtts.ui.widgets import PRIVATE, PageContext

STATUS_COLUMN_KEYS, CLEARED_COLUMN_KEYS = ["group", "what", "value"], ["what", "before", "after"]
MEMORY_AXIS, QUEUE_AXIS = "Resident memory (MiB)", "Requests waiting"  # the plots' columns (their titles: i18n)
REFRESH_S = 10
GROUPS = ["engine", "timings", "memory", "queue", "voices", "other"]


@dataclass(frozen=True)
class Field:
    """How one status value reads: its group, its name's key (i18n) or its name as it is, its unit ("s", "MiB" or none)."""

    group: str
    name_key: str = ""
    unit: str = ""
    name: str = ""

    def label(self, language: str) -> str:
        return page_text(self.name_key, language) if self.name_key else self.name


# Each status key (a nested one as "parent.key"): its group and unit; its name is TEXTS["system.field.<key>"].
FIELDS = {
    path: Field(group, f"system.field.{path}", unit)
    for path, group, unit in [
        ("ready", "engine", ""),
        ("engine", "engine", ""),
        ("engine_reason", "engine", ""),
        ("device", "engine", ""),
        ("dtype", "engine", ""),
        ("sample_rates", "engine", ""),
        ("checkpoint", "engine", ""),
        ("llm_layers", "engine", ""),
        ("llm_hidden", "engine", ""),
        ("llm_vocab", "engine", ""),
        ("max_batch", "engine", ""),
        ("decode", "engine", ""),
        ("stream", "engine", ""),
        ("decode_capture", "engine", ""),
        ("decode_sync_every", "engine", ""),
        ("decode_buckets", "engine", ""),
        ("fallbacks", "engine", ""),
        ("pid", "engine", ""),
        ("replica", "engine", ""),
        ("shared_state", "engine", ""),
        ("kv_cache_mib", "memory", "MiB"),
        ("timings.ready_s", "timings", "s"),
        ("timings.engine_load_s", "timings", "s"),
        ("timings.frontend_load_s", "timings", "s"),
        ("timings.frontend_wait_s", "timings", "s"),
        ("timings.voices_load_s", "timings", "s"),
        ("timings.voices_warmup_s", "timings", "s"),
        ("timings.engine_warmup_s", "timings", "s"),
        ("timings.shared_state_check_s", "timings", "s"),
        ("timings.http_warmup_s", "timings", "s"),
        ("memory.rss_mib", "memory", "MiB"),
        ("memory.frontend_rss_mib", "memory", "MiB"),
        ("memory.vram_allocated", "memory", "MiB"),
        ("memory.vram_reserved", "memory", "MiB"),
        ("memory.vram_peak", "memory", "MiB"),
        ("memory.kv_cache", "memory", "MiB"),
        ("queue_waiting", "queue", ""),
        ("device_busy", "queue", ""),
        ("syntheses_active", "queue", ""),
        ("batch_items_pending", "queue", ""),
        ("builtin_voices", "voices", ""),
        ("saved_voices", "voices", ""),
        ("cached_voices", "voices", ""),
        ("voices", "voices", ""),
    ]
}
# A nested value's keys that FIELDS does not list: their group, a name prefix (i18n key, or none) and the unit they share.
SECTIONS = {
    "timings": Field("timings", "", "s"),
    "load_seconds": Field("timings", "system.section.load_seconds", "s"),
    "memory": Field("memory", "", "MiB"),
    "disk_mib": Field("engine", "system.section.disk_mib", "MiB"),
}


def humanize(key: str) -> str:
    """`frontend_rss_mib` -> "Frontend rss": the key without its unit suffix, in words."""
    for suffix in ("_mib", "_s"):
        key = key.removesuffix(suffix)
    words = key.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def format_value(value: object, unit: str, language: str = "en") -> str:
    """Seconds with one decimal, MiB whole; lists and dicts in one line; absent as a dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return page_text("system.yes" if value else "system.no", language)
    if isinstance(value, (int, float)) and unit:
        return f"{value:,.1f} s" if unit == "s" else f"{value:,.0f} {unit}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or page_text("system.none", language)
    if isinstance(value, dict):
        return "; ".join(f"{key}: {format_value(item, '', language)}" for key, item in value.items())
    return server_phrase(str(value), language)


def field_of(key: str, parent: str | None, language: str = "en") -> Field:
    """How a status key reads; a key FIELDS lacks is named from the key, in its section's group or under Other."""
    path = f"{parent}.{key}" if parent else key
    if path in FIELDS:
        return FIELDS[path]
    section = SECTIONS.get(parent or "")
    if section is not None:
        name = f"{section.label(language)} {humanize(key).lower()}".strip()
        return Field(section.group, unit=section.unit, name=name[:1].upper() + name[1:])
    return Field("other", name=humanize(path.replace(".", " ")))


def columns(keys: list[str], language: str) -> list[str]:
    return [page_text(f"system.column.{key}", language) for key in keys]


STATUS_COLUMNS, CLEARED_COLUMNS = columns(STATUS_COLUMN_KEYS, "en"), columns(CLEARED_COLUMN_KEYS, "en")  # before a load


def status_rows(status: dict[str, object], language: str = "en") -> pd.DataFrame:
    """The status as (group, what, value) rows, by group, each group in the order FIELDS lists its keys."""
    rows: list[tuple[Field, object]] = []
    for key, value in status.items():
        if isinstance(value, dict) and key in SECTIONS:
            rows += [(field_of(name, key, language), item) for name, item in value.items()]
        else:
            rows.append((field_of(key, None, language), value))
    order = {field.name_key: index for index, field in enumerate(FIELDS.values())}
    rows.sort(key=lambda row: (GROUPS.index(row[0].group), order.get(row[0].name_key, len(order))))
    table = [
        [page_text(f"system.group.{f.group}", language), f.label(language), format_value(v, f.unit, language)] for f, v in rows
    ]
    return pd.DataFrame(table, columns=columns(STATUS_COLUMN_KEYS, language))


def cleared_rows(before: dict[str, float], after: dict[str, float], language: str = "en") -> pd.DataFrame:
    names = [name for name in before if name in after] + [name for name in after if name not in before]
    rows = [[field_of(name, "memory", language).label(language), _mib(before.get(name)), _mib(after.get(name))] for name in names]
    return pd.DataFrame(rows, columns=columns(CLEARED_COLUMN_KEYS, language))


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


def build_system_tab(ctx: PageContext, demo: gr.Blocks) -> None:
    """The System tab's widgets and events (inside an open `gr.Tab`); none of them is in the API."""
    service = ctx.service
    status_view = gr.Dataframe(
        pd.DataFrame(columns=STATUS_COLUMNS), label=label("system.status"), interactive=False, elem_id="system-status", wrap=True
    )
    clock = "%H:%M:%S"  # Vega's own tick labels for a few minutes of readings are bare fractions (".500")
    memory_plot = gr.LinePlot(
        x="time",
        y=MEMORY_AXIS,
        title=label("system.memory_title"),
        y_axis_format=",d",
        height=220,
        x_axis_format=clock,
        elem_id="system-memory",
    )
    queue_plot = gr.LinePlot(
        x="time",
        y=QUEUE_AXIS,
        title=label("system.field.queue_waiting"),
        y_axis_format="d",
        height=180,
        x_axis_format=clock,
        elem_id="system-queue",
    )
    with gr.Row():
        refresh = gr.Button(label("system.refresh"))
        clear = gr.Button(label("system.clear"), variant="stop", elem_id="clear-vram")
    cleared = gr.Dataframe(
        pd.DataFrame(columns=CLEARED_COLUMNS),
        label=label("system.cleared"),
        interactive=False,
        visible=False,
        elem_id="cleared",
    )
    views = [status_view, memory_plot, queue_plot]

    def update(page: gr.Request):
        language = language_of(page)
        history = history_frame(list(service.history))
        time_title = page_text("system.time", language)
        memory = gr.LinePlot(history, x_title=time_title, y_title=page_text("system.memory_axis", language))
        queue = gr.LinePlot(history, x_title=time_title, y_title=page_text("system.queue_axis", language))
        return status_rows(service.status(), language), memory, queue

    def clear_caches(page: gr.Request):
        return gr.Dataframe(cleared_rows(*service.clear_caches(), language_of(page)), visible=True)

    refresh.click(update, None, views, api_visibility=PRIVATE)
    clear.click(clear_caches, None, cleared, api_visibility=PRIVATE)  # a write: the page may, API clients may not
    gr.Timer(REFRESH_S).tick(update, None, views, api_visibility=PRIVATE, show_progress="hidden")
    demo.load(update, None, views, api_visibility=PRIVATE)
