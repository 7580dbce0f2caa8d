"""The System tab's status rows: human names, units, rounding, and keys the page does not know yet."""

from glmtts.ui.system import STATUS_COLUMNS, cleared_rows, history_frame, status_rows


def rows_by_label(status: dict) -> dict[str, tuple[str, str]]:
    table = status_rows(status)
    assert list(table.columns) == STATUS_COLUMNS
    return {what: (group, value) for group, what, value in table.itertuples(index=False)}


def test_known_keys_read_as_named_rows_with_units_and_rounded_numbers():
    rows = rows_by_label(
        {
            "engine": "embedded",
            "ready": True,
            "timings": {"engine_load_s": 12.345},
            "memory": {"rss_mib": 721.523438},
            "queue_waiting": 0,
            "builtin_voices": ["libri_1688", "libri_367"],
        }
    )
    assert rows["Engine"] == ("Engine", "embedded")
    assert rows["Ready"] == ("Engine", "yes")
    assert rows["Engine load"] == ("Timings", "12.3 s")
    assert rows["Server process"] == ("Memory", "722 MiB")
    assert rows["Requests waiting for the device"] == ("Queue", "0")
    assert rows["Built-in voices"] == ("Voices", "libri_1688, libri_367")
    groups = [group for group, _value in rows.values()]
    assert groups == sorted(groups, key=["Engine", "Timings", "Memory", "Queue", "Voices"].index)


def test_a_new_key_is_shown_with_a_human_name_in_its_section_or_under_other():
    rows = rows_by_label(
        {"timings": {"tokenizer_load_s": 1.26}, "memory": {"weights_llm": 3000.4}, "brand_new_thing": 2, "extra": {"a_b": 1}}
    )
    assert rows["Tokenizer load"] == ("Timings", "1.3 s")
    assert rows["Weights llm"] == ("Memory", "3,000 MiB")
    assert rows["Brand new thing"] == ("Other", "2")
    assert rows["Extra"] == ("Other", "a_b: 1")


def test_memory_before_and_after_has_named_columns_and_whole_mib():
    table = cleared_rows({"rss_mib": 721.5, "frontend_rss_mib": 90.4}, {"rss_mib": 700.2, "frontend_rss_mib": 90.4})
    assert list(table.columns) == ["What", "Before (MiB)", "After (MiB)"]
    assert table.values.tolist() == [["Server process", 722, 700], ["Text frontend process", 90, 90]]


def test_the_memory_history_is_in_whole_mib_under_a_titled_column():
    frame = history_frame([(1_700_000_000.0, 721.523438, 1)])
    assert frame["Resident memory (MiB)"].tolist() == [722] and frame["Requests waiting"].tolist() == [1]
