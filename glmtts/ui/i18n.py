"""The page's words in English and Chinese: one table (`TEXTS`), read in two places.

- Labels, buttons, help and Markdown are `label(key)`: Gradio sends the table to the browser
  (`PAGE_I18N`, given to `mount_gradio_app`), which shows them in the browser's language.
- Texts a callback writes (status lines, errors the page words) are `page_text(key, language, ...)`,
  with the language of the request that asked (`language_of`).

The switch on the page keeps its choice in a cookie that both sides read (`LANGUAGE_COOKIE`):
the browser switches its locale from it on load, and the callbacks prefer it over the
browser's Accept-Language. Messages from the library (`str(error)`) are shown as they are.
Templates are `str.format` templates: literal braces are doubled; a template with
placeholders is Python's alone (the browser shows labels without values).
"""

from __future__ import annotations

import json
from string import Formatter

import gradio as gr
from gradio.i18n import I18nData

from glmtts.service import LOCAL_DISK, NO_CHECKPOINT

LANGUAGES = ("en", "zh")
DEFAULT_LANGUAGE = "en"
LANGUAGE_COOKIE = "glmtts_lang"
GRADIO_LOCALES = {"en": "en", "zh": "zh-CN"}  # Gradio's own words (upload hints, footer) follow the switch too

TEXTS: dict[str, dict[str, str]] = {
    # The page
    "page.intro": {
        "en": "## Zero-shot TTS, always warm\nGive 3 to 10 s of a voice and any Chinese, English or mixed text.",
        "zh": "## 零样本语音合成，常驻预热\n提供 3 到 10 秒的参考音频，即可用这个音色朗读任意中文、英文或中英混合文本。",
    },
    "page.engine": {
        "en": "Engine **{engine}** on **{device}** ({reason}).",
        "zh": "引擎 **{engine}**，运行于 **{device}**（{reason}）。",
    },
    "page.language": {"en": "Language", "zh": "语言"},
    "tab.single": {"en": "Single", "zh": "单条合成"},
    "tab.batch": {"en": "Batch", "zh": "批量合成"},
    "tab.phoneme": {"en": "Phoneme", "zh": "音素"},
    "tab.voices": {"en": "Voices", "zh": "音色"},
    "tab.system": {"en": "System", "zh": "系统"},
    # Widgets several tabs share
    "form.prompt_audio": {"en": "Prompt voice (upload or record)", "zh": "参考音频（上传或录制）"},
    "form.voice": {"en": "…or a built-in or saved voice", "zh": "…或选择内置、已保存的音色"},
    "form.prompt_text": {"en": "Prompt transcript (optional)", "zh": "参考文本（可选）"},
    "form.advanced": {"en": "Advanced settings", "zh": "高级设置"},
    "form.seed": {"en": "Seed", "zh": "随机种子"},
    "form.speed": {"en": "Speed", "zh": "语速"},
    "form.sample_rate": {"en": "Sample rate", "zh": "采样率"},
    "form.sampling": {"en": "Sampling method", "zh": "采样方法"},
    "form.top_k": {"en": "Top-k", "zh": "Top-k"},
    "form.top_p": {"en": "Top-p", "zh": "Top-p"},
    "form.temperature": {"en": "Temperature", "zh": "温度"},
    "form.use_cache": {"en": "Prompt-history cache for long text", "zh": "长文本使用参考历史缓存"},
    "form.live": {"en": "Live (plays as each sentence finishes)", "zh": "实时播放（每句合成完即播放）"},
    "form.output": {"en": "Output (whole file)", "zh": "输出（完整文件）"},
    "form.examples": {"en": "Examples (a click fills the form)", "zh": "示例（点击即填入表单）"},
    "examples.column.text": {"en": "Text", "zh": "文本"},
    "examples.column.voice": {"en": "Voice", "zh": "音色"},
    "examples.column.phonemes": {"en": "Phoneme sequence", "zh": "音素序列"},
    "form.warming_up": {
        "en": "The model is still warming up; try again in a few seconds.",
        "zh": "模型仍在预热，请几秒后再试。",
    },
    "form.upload_only": {
        "en": "Upload the file through the page; paths on the server are not accepted.",
        "zh": "请通过页面上传文件；不接受服务器上的路径。",
    },
    "form.seed_missing": {"en": "Give a seed (a whole number).", "zh": "请填写随机种子（整数）。"},
    # Single
    "single.text": {"en": "Text to speak", "zh": "要合成的文本"},
    "single.use_phoneme": {
        "en": "Honour phoneme tokens in the text (<|SH|><|ANG1|>, [[ipa: ...]])",
        "zh": "识别文本中的音素标记（<|SH|><|ANG1|>、[[ipa: ...]]）",
    },
    "single.generate": {"en": "Generate", "zh": "生成"},
    "single.stop": {"en": "Stop", "zh": "停止"},
    "single.details": {"en": "Timings and normalized text", "zh": "耗时与规范化文本"},
    "single.timings": {"en": "Timings (seconds)", "zh": "耗时（秒）"},
    "single.normalized": {"en": "Normalized text", "zh": "规范化文本"},
    "single.stopped": {"en": "Stopped.", "zh": "已停止。"},
    "single.segment_ready": {"en": "segment {index} of {total} ready", "zh": "第 {index}/{total} 段已就绪"},
    "single.segment_playing": {"en": "segment {index} of {total} playing", "zh": "正在播放第 {index}/{total} 段"},
    "single.estimating": {
        "en": "Speaking… {position}; estimating the time left.",
        "zh": "合成中… {position}；正在估算剩余时间。",
    },
    "single.time_left": {
        "en": "Speaking… {position}; about {seconds:.0f} s left.",
        "zh": "合成中… {position}；预计还需 {seconds:.0f} 秒。",
    },
    "single.done": {
        "en": "Done: {duration:.1f} s of audio in {total:.2f} s (RTF {rtf:.3f}, first audio after {first:.2f} s), "
        "{segments} segment(s).{notes}",
        "zh": "完成：用时 {total:.2f} 秒生成 {duration:.1f} 秒音频（RTF {rtf:.3f}，首段音频 {first:.2f} 秒），"
        "共 {segments} 段。{notes}",
    },
    "single.note": {"en": " Note: {note}.", "zh": " 注意：{note}。"},
    "single.not_stored": {"en": "The audio could not be stored ({error}).", "zh": "音频无法保存（{error}）。"},
    # Batch
    "batch.intro": {
        "en": "A JSONL in the GLM-TTS format (`uttid`, `prompt_text`, `prompt_speech`, `syn_text`; `prompt_speech` "
        "is a voice name or a path inside `examples/`, `outputs/uploads/` or `outputs/voices/`), or a text "
        "file with one utterance a line spoken in the voice chosen below. Jobs run on the server: closing "
        "the page does not stop them, and a job cut short by a restart can be resumed under *Jobs*.",
        "zh": "GLM-TTS 格式的 JSONL（`uttid`、`prompt_text`、`prompt_speech`、`syn_text`；`prompt_speech` "
        "为音色名，或 `examples/`、`outputs/uploads/`、`outputs/voices/` 中的路径），或每行一句的文本文件，"
        "用下方选择的音色朗读。任务在服务器上运行：关闭页面不会停止任务，因重启中断的任务可在“任务”中继续。",
    },
    "batch.file": {"en": "Batch file", "zh": "批量文件"},
    "batch.format": {"en": "Format", "zh": "格式"},
    "batch.mode_jsonl": {"en": "JSONL (GLM-TTS format)", "zh": "JSONL（GLM-TTS 格式）"},
    "batch.mode_lines": {"en": "One utterance a line", "zh": "每行一句"},
    "batch.job_name": {"en": "Job name (optional)", "zh": "任务名称（可选）"},
    "batch.use_phoneme": {"en": "Honour phoneme tokens", "zh": "识别音素标记"},
    "batch.run": {"en": "Run batch", "zh": "开始批量合成"},
    "batch.items": {"en": "Items", "zh": "条目"},
    "batch.zip": {"en": "Download all (zip)", "zh": "全部下载（zip）"},
    "batch.jobs": {"en": "Jobs", "zh": "任务"},
    "batch.jobs_table": {"en": "Batch jobs on this server, newest first", "zh": "本服务器上的批量任务（最新在前）"},
    "batch.job": {"en": "Job", "zh": "任务"},
    "batch.refresh": {"en": "Refresh", "zh": "刷新"},
    "batch.show": {"en": "Show", "zh": "查看"},
    "batch.resume": {"en": "Resume", "zh": "继续"},
    "batch.cancel": {"en": "Cancel", "zh": "取消"},
    "batch.column.uttid": {"en": "uttid", "zh": "uttid"},
    "batch.column.status": {"en": "status", "zh": "状态"},
    "batch.column.seconds": {"en": "seconds", "zh": "时长（秒）"},
    "batch.column.message": {"en": "message", "zh": "信息"},
    "batch.column.id": {"en": "id", "zh": "编号"},
    "batch.column.name": {"en": "name", "zh": "名称"},
    "batch.column.done": {"en": "done", "zh": "已完成"},
    "batch.column.total": {"en": "total", "zh": "总数"},
    "batch.column.ok": {"en": "ok", "zh": "成功"},
    "batch.column.errors": {"en": "errors", "zh": "失败"},
    "batch.column.created": {"en": "created", "zh": "创建时间"},
    "batch.state.queued": {"en": "queued", "zh": "排队中"},
    "batch.state.running": {"en": "running", "zh": "运行中"},
    "batch.state.done": {"en": "done", "zh": "已完成"},
    "batch.state.cancelled": {"en": "cancelled", "zh": "已取消"},
    "batch.state.interrupted": {"en": "interrupted", "zh": "已中断"},
    "batch.state.failed": {"en": "failed", "zh": "失败"},
    "batch.state.pending": {"en": "pending", "zh": "等待中"},
    "batch.state.ok": {"en": "ok", "zh": "成功"},
    "batch.state.error": {"en": "error", "zh": "出错"},
    "batch.no_file": {"en": "Choose a batch file first.", "zh": "请先选择批量文件。"},
    "batch.not_utf8": {"en": "The batch file is not UTF-8 text.", "zh": "批量文件不是 UTF-8 文本。"},
    "batch.no_voice": {
        "en": "Give a prompt voice for the utterances: upload one or choose a voice.",
        "zh": "请为这些句子指定参考音色：上传一段音频或选择一个音色。",
    },
    "batch.not_stored": {
        "en": "The batch could not be stored ({kind}: {error}).",
        "zh": "批量任务无法保存（{kind}：{error}）。",
    },
    "batch.no_such_job": {"en": "There is no batch job {job!r}.", "zh": "没有批量任务 {job!r}。"},
    "batch.choose_job": {"en": "Choose a job from the list first.", "zh": "请先从列表中选择一个任务。"},
    "batch.job_queued": {
        "en": "Job {name} is queued behind the batch jobs submitted before it.",
        "zh": "任务 {name} 正在排队，等待先提交的批量任务。",
    },
    "batch.job_cancelling": {
        "en": "Job {name} cancelling: {stopping}; {done} of {total} finished.",
        "zh": "任务 {name} 正在取消：{stopping}；已完成 {done}/{total}。",
    },
    "batch.stopping_one": {"en": "the current item stops", "zh": "当前条目即将停止"},
    "batch.stopping_many": {"en": "the items running now stop", "zh": "正在运行的条目即将停止"},
    "batch.job_running": {
        "en": "Job {name} running: {done} of {total} finished ({ok} ok){now}.",
        "zh": "任务 {name} 运行中：已完成 {done}/{total}（成功 {ok} 条）{now}。",
    },
    "batch.job_now": {"en": "; now: {items}", "zh": "；正在处理：{items}"},
    "batch.item_on": {"en": "{uttid} on {where}", "zh": "{uttid}（{where}）"},
    "batch.separator": {"en": ", ", "zh": "、"},
    "batch.job_done": {
        "en": "Job {name} done: {ok} of {total} items ok; files in outputs/batch/{name}/.",
        "zh": "任务 {name} 已完成：{total} 条中 {ok} 条成功；文件在 outputs/batch/{name}/。",
    },
    "batch.job_stopped": {
        "en": "Job {name} {state}{message}: {done} of {total} finished, {ok} ok. Resume it below to run the rest.",
        "zh": "任务 {name} {state}{message}：已完成 {done}/{total}，成功 {ok} 条。可在下方继续运行其余条目。",
    },
    "batch.job_message": {"en": " ({message})", "zh": "（{message}）"},
    # Phoneme
    "phoneme.intro": {
        "en": "Turn text into its phoneme sequence (after the replace dictionary), edit the tokens, and "
        "synthesize from the edited sequence. Chinese: `<|X|><|IAN2|>`; English: `[[arpa: HH AH0 L OW1]]` "
        "or `[[ipa: həˈloʊ]]`.",
        "zh": "把文本转换为音素序列（先经过替换词典），编辑其中的标记，再用编辑后的序列合成。"
        "中文：`<|X|><|IAN2|>`；英文：`[[arpa: HH AH0 L OW1]]` 或 `[[ipa: həˈloʊ]]`。",
    },
    "phoneme.text": {"en": "Text", "zh": "文本"},
    "phoneme.to_sequence": {"en": "Text → phonemes", "zh": "文本 → 音素"},
    "phoneme.sequence": {"en": "Phoneme sequence (editable)", "zh": "音素序列（可编辑）"},
    "phoneme.generate": {"en": "Synthesize from phonemes", "zh": "按音素合成"},
    "phoneme.dict": {
        "en": "Replace dictionary (configs/G2P_replace_dict.jsonl)",
        "zh": "替换词典（configs/G2P_replace_dict.jsonl）",
    },
    "phoneme.dict_text": {"en": 'One {{"surface": "replacement"}} a line', "zh": '每行一条 {{"原文": "替换"}}'},
    "phoneme.validate": {"en": "Validate", "zh": "校验"},
    "phoneme.save": {"en": "Save", "zh": "保存"},
    "phoneme.invalid": {"en": "Invalid:\n{error}", "zh": "无效：\n{error}"},
    "phoneme.valid": {"en": "Valid: {count} entries.", "zh": "有效：共 {count} 条。"},
    "phoneme.not_saved": {"en": "Not saved: {error}", "zh": "未保存：{error}"},
    "phoneme.saved": {
        "en": "Saved {count} entries to {file}; in effect now.",
        "zh": "已将 {count} 条保存到 {file}，立即生效。",
    },
    # Voices
    "voices.intro": {
        "en": "Save a cloned voice under a name, hear it, rename or delete it, or take it to another machine.",
        "zh": "为克隆的音色命名并保存，可试听、重命名、删除，或导出到另一台机器。",
    },
    "voices.prompt": {"en": "Prompt voice (3 to 10 s)", "zh": "参考音频（3 到 10 秒）"},
    "voices.name": {"en": "Name", "zh": "名称"},
    "voices.transcript": {"en": "What the prompt says (recommended)", "zh": "参考文本（建议填写）"},
    "voices.save": {"en": "Save voice", "zh": "保存音色"},
    "voices.chosen": {"en": "Voice", "zh": "音色"},
    "voices.play": {"en": "Play prompt", "zh": "试听参考音频"},
    "voices.heard": {"en": "Prompt", "zh": "参考音频"},
    "voices.new_name": {"en": "New name", "zh": "新名称"},
    "voices.rename": {"en": "Rename", "zh": "重命名"},
    "voices.delete": {"en": "Delete", "zh": "删除"},
    "voices.export": {"en": "Export", "zh": "导出"},
    "voices.exported": {"en": "Voice file", "zh": "音色文件"},
    "voices.import_section": {"en": "Import a voice file", "zh": "导入音色文件"},
    "voices.file": {"en": "Voice file (.voice.zip)", "zh": "音色文件（.voice.zip）"},
    "voices.imported_name": {
        "en": "Name (empty: the name it was exported with)",
        "zh": "名称（留空则使用导出时的名称）",
    },
    "voices.import": {"en": "Import", "zh": "导入"},
    "voices.column.name": {"en": "Name", "zh": "名称"},
    "voices.column.id": {"en": "Id", "zh": "ID"},
    "voices.column.kind": {"en": "Kind", "zh": "类型"},
    "voices.column.language": {"en": "Prompt language", "zh": "参考音频语言"},
    "voices.column.seconds": {"en": "Prompt (s)", "zh": "参考音频（秒）"},
    "voices.column.saved": {"en": "Saved (UTC)", "zh": "保存时间（UTC）"},
    "voices.builtin": {"en": "built-in", "zh": "内置"},
    "voices.saved_kind": {"en": "saved", "zh": "已保存"},
    "voices.language.en": {"en": "English", "zh": "英文"},
    "voices.language.zh": {"en": "Chinese", "zh": "中文"},
    "voices.language.zh+en": {"en": "Chinese and English", "zh": "中英混合"},
    "voices.need_prompt": {"en": "Upload or record 3 to 10 s of the voice first.", "zh": "请先上传或录制 3 到 10 秒的音频。"},
    "voices.need_file": {
        "en": "Choose a voice file (.voice.zip) exported from this page or /v1/voices/{{id}}/export.",
        "zh": "请选择从本页面或 /v1/voices/{{id}}/export 导出的音色文件（.voice.zip）。",
    },
    "voices.need_choice": {"en": "Choose a voice in the list first.", "zh": "请先在列表中选择一个音色。"},
    "voices.saved": {
        "en": "Saved **{name}** (id `{id}`); every tab offers it now.",
        "zh": "已保存 **{name}**（ID `{id}`），所有标签页均可使用。",
    },
    "voices.renamed": {"en": "Renamed to **{name}**.", "zh": "已重命名为 **{name}**。"},
    "voices.deleted": {"en": "Deleted `{id}`.", "zh": "已删除 `{id}`。"},
    "voices.imported": {"en": "Imported **{name}** (id `{id}`).", "zh": "已导入 **{name}**（ID `{id}`）。"},
    # System
    "system.status": {"en": "Status", "zh": "状态"},
    "system.memory_title": {"en": "Resident memory of the server, last minutes", "zh": "服务器常驻内存（最近几分钟）"},
    "system.memory_axis": {"en": "Resident memory (MiB)", "zh": "常驻内存（MiB）"},
    "system.queue_axis": {"en": "Requests waiting", "zh": "等待中的请求"},
    "system.time": {"en": "Time", "zh": "时间"},
    "system.refresh": {"en": "Refresh status", "zh": "刷新状态"},
    "system.clear": {"en": "Clear VRAM / caches", "zh": "清理显存 / 缓存"},
    "system.cleared": {"en": "Memory before and after clearing", "zh": "清理前后的内存"},
    "system.column.group": {"en": "Group", "zh": "分组"},
    "system.column.what": {"en": "What", "zh": "项目"},
    "system.column.value": {"en": "Value", "zh": "数值"},
    "system.column.before": {"en": "Before (MiB)", "zh": "清理前（MiB）"},
    "system.column.after": {"en": "After (MiB)", "zh": "清理后（MiB）"},
    "system.yes": {"en": "yes", "zh": "是"},
    "system.no": {"en": "no", "zh": "否"},
    "system.none": {"en": "none", "zh": "无"},
    "system.group.engine": {"en": "Engine", "zh": "引擎"},
    "system.group.timings": {"en": "Timings", "zh": "耗时"},
    "system.group.memory": {"en": "Memory", "zh": "内存"},
    "system.group.queue": {"en": "Queue", "zh": "队列"},
    "system.group.voices": {"en": "Voices", "zh": "音色"},
    "system.group.other": {"en": "Other", "zh": "其他"},
    "system.section.load_seconds": {"en": "Load", "zh": "加载"},
    "system.section.disk_mib": {"en": "On disk", "zh": "磁盘占用"},
    "system.field.ready": {"en": "Ready", "zh": "就绪"},
    "system.field.engine": {"en": "Engine", "zh": "引擎"},
    "system.field.engine_reason": {"en": "Why this engine", "zh": "选用此引擎的原因"},
    "system.field.device": {"en": "Device", "zh": "设备"},
    "system.field.dtype": {"en": "Number format", "zh": "数值精度"},
    "system.field.sample_rates": {"en": "Sample rates (Hz)", "zh": "采样率（Hz）"},
    "system.field.checkpoint": {"en": "Checkpoint", "zh": "检查点"},
    "system.field.llm_layers": {"en": "LLM layers", "zh": "LLM 层数"},
    "system.field.llm_hidden": {"en": "LLM hidden size", "zh": "LLM 隐藏维度"},
    "system.field.llm_vocab": {"en": "LLM vocabulary", "zh": "LLM 词表大小"},
    "system.field.max_batch": {"en": "Largest batch", "zh": "最大批大小"},
    "system.field.decode": {"en": "Decoding", "zh": "解码方式"},
    "system.field.stream": {"en": "Streams by default", "zh": "默认流式输出"},
    "system.field.decode_capture": {"en": "Decoder graph capture", "zh": "解码图捕获"},
    "system.field.decode_sync_every": {"en": "Decoder syncs every (steps)", "zh": "解码同步间隔（步）"},
    "system.field.decode_buckets": {"en": "Decoder buckets", "zh": "解码分桶"},
    "system.field.fallbacks": {"en": "Fallbacks", "zh": "回退记录"},
    "system.field.pid": {"en": "Process id", "zh": "进程号"},
    "system.field.replica": {"en": "Replica", "zh": "副本"},
    "system.field.shared_state": {"en": "Shared state", "zh": "共享状态"},
    "system.field.kv_cache_mib": {"en": "KV cache", "zh": "KV 缓存"},
    "system.field.timings.ready_s": {"en": "Start to ready", "zh": "启动到就绪"},
    "system.field.timings.engine_load_s": {"en": "Engine load", "zh": "引擎加载"},
    "system.field.timings.frontend_load_s": {"en": "Text frontend load", "zh": "文本前端加载"},
    "system.field.timings.frontend_wait_s": {"en": "Wait for the text frontend", "zh": "等待文本前端"},
    "system.field.timings.voices_load_s": {"en": "Voices load", "zh": "音色加载"},
    "system.field.timings.voices_warmup_s": {"en": "Voices analysis", "zh": "音色分析"},
    "system.field.timings.engine_warmup_s": {"en": "Warm-up synthesis", "zh": "预热合成"},
    "system.field.timings.shared_state_check_s": {"en": "Shared state check", "zh": "共享状态检查"},
    "system.field.timings.http_warmup_s": {"en": "HTTP routes warm-up", "zh": "HTTP 路由预热"},
    "system.field.memory.rss_mib": {"en": "Server process", "zh": "服务进程"},
    "system.field.memory.frontend_rss_mib": {"en": "Text frontend process", "zh": "文本前端进程"},
    "system.field.memory.vram_allocated": {"en": "VRAM allocated", "zh": "已分配显存"},
    "system.field.memory.vram_reserved": {"en": "VRAM reserved", "zh": "已预留显存"},
    "system.field.memory.vram_peak": {"en": "VRAM peak", "zh": "显存峰值"},
    "system.field.memory.kv_cache": {"en": "KV cache", "zh": "KV 缓存"},
    "system.field.queue_waiting": {"en": "Requests waiting for the device", "zh": "等待设备的请求"},
    "system.field.device_busy": {"en": "Requests on the device", "zh": "设备上的请求"},
    "system.field.syntheses_active": {"en": "Syntheses in progress", "zh": "进行中的合成"},
    "system.field.batch_items_pending": {"en": "Batch items pending", "zh": "待处理的批量条目"},
    "system.field.builtin_voices": {"en": "Built-in voices", "zh": "内置音色"},
    "system.field.saved_voices": {"en": "Saved voices", "zh": "已保存音色"},
    "system.field.cached_voices": {"en": "Analysed voices in memory", "zh": "内存中已分析的音色"},
    "system.field.voices": {"en": "Embedded voice models", "zh": "内置语音模型"},
    # Fixed phrases of the server's status, in English for the API: the page shows them in its language.
    "server.no_checkpoint": {"en": NO_CHECKPOINT, "zh": "未配置 GLM-TTS 检查点，可用 GLMTTS_CKPT 设置"},
    "server.local_disk": {"en": LOCAL_DISK, "zh": "本地磁盘"},
}


def placeholders(template: str) -> set[str]:
    """The names a template fills in (`{job!r}` -> "job"); doubled braces are literal text."""
    return {field for _literal, field, _spec, _conversion in Formatter().parse(template) if field is not None}


def page_text(key: str, language: str, **values: object) -> str:
    """The page's words for `key` in `language` (English for a language the table lacks)."""
    texts = TEXTS[key]
    return texts.get(language, texts[DEFAULT_LANGUAGE]).format(**values)


def server_phrase(text: str, language: str) -> str:
    """A fixed phrase of the server's status (written in English) in `language`; any other text as it is."""
    key = _SERVER_PHRASES.get(text)
    return text if key is None else page_text(key, language)


_SERVER_PHRASES = {texts[DEFAULT_LANGUAGE]: key for key, texts in TEXTS.items() if key.startswith("server.")}


def label(key: str) -> I18nData:
    """A static label, button or Markdown text: the browser puts in the words of its language."""
    if placeholders(TEXTS[key][DEFAULT_LANGUAGE]):
        raise ValueError(f"{key!r} has placeholders: the callbacks fill it in with page_text()")
    return PAGE_I18N(key)


def language_of(request: gr.Request | None) -> str:
    """The language a request's page shows: the switch's cookie, else the browser's first language.

    No request (a direct call) or neither hint (a script, gradio_client) reads English."""
    if request is None:
        return DEFAULT_LANGUAGE
    chosen = (getattr(request, "cookies", None) or {}).get(LANGUAGE_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    first = ((getattr(request, "headers", None) or {}).get("accept-language") or "").split(",")[0]
    primary = first.split(";")[0].strip().split("-")[0].lower()
    return primary if primary in LANGUAGES else DEFAULT_LANGUAGE


def _browser_table(language: str) -> dict[str, str]:
    """What the browser needs: the templates without placeholders, their doubled braces undone."""
    return {key: texts[language].format() for key, texts in TEXTS.items() if not placeholders(texts[language])}


PAGE_I18N = gr.I18n(**{language: _browser_table(language) for language in LANGUAGES})

# On load: the locale the switch chose (its cookie), else the browser's language when it is Chinese.
# Gradio chose its locale from the browser before this runs; where that differs, its own
# `changeLocale` (what its Settings panel calls) is found among the page's loaded modules.
# Returns the switch's value.
LOAD_LANGUAGE_JS = (
    r"""
async () => {
    const chosen = document.cookie.match(/(?:^|;\s*)COOKIE=(LANGUAGES)(?:;|$)/);
    const language = chosen ? chosen[1] : (navigator.language.toLowerCase().startsWith("zh") ? "zh" : "en");
    if (!document.documentElement.lang.toLowerCase().startsWith(language)) {
        const modules = performance.getEntriesByType("resource").map((entry) => entry.name);
        for (const url of modules.filter((name) => /\/assets\/core-[\w-]+\.js$/.test(name))) {
            const module = await import(url);
            if (typeof module.changeLocale === "function") {
                await module.changeLocale(LOCALES[language]);
                break;
            }
        }
        // Gradio renames a tab when it is shown: show each once, then the one that was open.
        const tabs = [...document.querySelectorAll("[role=tab]")];
        const open = tabs.find((tab) => tab.getAttribute("aria-selected") === "true");
        tabs.forEach((tab) => tab.click());
        open?.click();
    }
    return language;
}
""".replace("COOKIE", LANGUAGE_COOKIE)
    .replace("LANGUAGES", "|".join(LANGUAGES))
    .replace("LOCALES", json.dumps(GRADIO_LOCALES))
)
# The switch: keep the choice for a year and reload, so that every label and every text from the
# server is in the chosen language (what was typed into the form is lost, as on any reload).
SWITCH_LANGUAGE_JS = f"""
(language) => {{
    document.cookie = `{LANGUAGE_COOKIE}=${{language}}; path=/; max-age=31536000; SameSite=Lax`;
    window.location.reload();
}}
"""


def add_language_switch(demo: gr.Blocks) -> gr.Radio:
    """The page's language switch (English / 中文), set from the page's language when it loads."""
    switch = gr.Radio(
        [("English", "en"), ("中文", "zh")],
        value=None,
        label=label("page.language"),
        container=False,
        scale=0,
        min_width=180,
        elem_id="language-switch",
    )
    demo.load(None, None, switch, js=LOAD_LANGUAGE_JS)  # browser-only events: not in the API
    switch.input(None, switch, None, js=SWITCH_LANGUAGE_JS)
    return switch
