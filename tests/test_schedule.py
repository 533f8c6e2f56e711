"""Tests for clublist.club.schedule: typed times, recurring phrases, cron, and occurrences across DST."""

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from clublist.club.schedule import (
    MAX_OCCURRENCES,
    Schedule,
    ScheduleError,
    next_occurrence,
    occurrences,
    parse_every,
    parse_when,
    validate_cron,
)
from clublist.errors import ClublistError

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
NOW = datetime(2026, 11, 18, 12, 0, tzinfo=BERLIN)  # a Wednesday, standard time (+01:00)


def berlin(*args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=BERLIN, fold=fold)


def hours(delta: timedelta | None) -> float:
    assert delta is not None
    return delta.total_seconds() / 3600


# --- parse_when -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01T18:00", berlin(2026, 12, 1, 18, 0)),
        ("2026-12-01 18:00", berlin(2026, 12, 1, 18, 0)),
        ("2026-12-01T17:00Z", berlin(2026, 12, 1, 18, 0)),
        ("2026-12-01 18:00+01:00", berlin(2026, 12, 1, 18, 0)),
        ("tomorrow 18:00", berlin(2026, 11, 19, 18, 0)),
        ("Tomorrow at 7:05", berlin(2026, 11, 19, 7, 5)),
        ("today 18:30", berlin(2026, 11, 18, 18, 30)),
        ("18:00", berlin(2026, 11, 18, 18, 0)),
        ("monday 18:00", berlin(2026, 11, 23, 18, 0)),
        ("next monday 18:00", berlin(2026, 11, 23, 18, 0)),
        ("wednesday 18:00", berlin(2026, 11, 25, 18, 0)),  # strictly after today
        ("thu 09:00", berlin(2026, 11, 19, 9, 0)),
        ("in 2 hours", berlin(2026, 11, 18, 14, 0)),
        ("in 30 minutes", berlin(2026, 11, 18, 12, 30)),
        ("in 3 days", berlin(2026, 11, 21, 12, 0)),
    ],
)
def test_parse_when_forms(text: str, expected: datetime) -> None:
    when = parse_when(text, NOW, BERLIN)
    assert when == expected
    assert when.tzinfo is BERLIN
    assert when.utcoffset() == expected.utcoffset()


def test_in_days_keeps_the_wall_clock_across_dst() -> None:
    friday = berlin(2026, 10, 23, 18, 0)  # +02:00; clocks go back on Sunday
    monday = parse_when("in 3 days", friday, BERLIN)
    assert (monday.day, monday.hour, hours(monday.utcoffset())) == (26, 18, 1)


def test_in_hours_counts_real_time_across_dst() -> None:
    before = berlin(2026, 10, 25, 1, 30)  # 23:30 UTC, +02:00
    later = parse_when("in 2 hours", before, BERLIN)
    assert later.astimezone(UTC) == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    assert (later.hour, hours(later.utcoffset())) == (2, 1)  # the second 02:30


@pytest.mark.parametrize("text", ["11:00", "today 09:00", "2026-11-01 10:00", "in 0 minutes"])
def test_parse_when_refuses_the_past(text: str) -> None:
    with pytest.raises(ScheduleError, match="in the past"):
        parse_when(text, NOW, BERLIN)


def test_past_time_today_suggests_tomorrow() -> None:
    with pytest.raises(ScheduleError, match="tomorrow 11:00"):
        parse_when("11:00", NOW, BERLIN)


@pytest.mark.parametrize("text", ["2026-03-29 02:30", "tomorrow 02:30", "sunday 02:30"])
def test_nonexistent_local_time_is_refused(text: str) -> None:
    saturday = berlin(2026, 3, 28, 12, 0)
    with pytest.raises(ScheduleError, match=r"does not exist.*2026-03-29 03:00.*\+02:00"):
        parse_when(text, saturday, BERLIN)


def test_ambiguous_local_time_is_refused_with_both_offsets() -> None:
    with pytest.raises(ScheduleError, match=r"twice.*T02:30\+02:00.*T02:30\+01:00"):
        parse_when("2026-10-25 02:30", berlin(2026, 10, 1), BERLIN)
    ny_now = datetime(2026, 10, 1, tzinfo=NEW_YORK)
    with pytest.raises(ScheduleError, match=r"twice.*-04:00.*-05:00"):
        parse_when("2026-11-01 01:30", ny_now, NEW_YORK)


def test_ambiguous_local_time_with_offset_is_accepted() -> None:
    second = parse_when("2026-10-25T02:30+01:00", berlin(2026, 10, 1), BERLIN)
    assert second.astimezone(UTC) == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("soon", "e.g. '2026-12-01 18:00'"),
        ("someday 18:00", "e.g."),
        ("in 2 fortnights", "e.g."),
        ("25:00", "HH:MM"),
        ("tomorrow 18:61", "HH:MM"),
        ("2026-12-01", "'2026-12-01 18:00'"),
        ("2026-13-01 18:00", "e.g."),
        ("in 99999999999 days", "too far"),
    ],
)
def test_parse_when_explains_bad_input(text: str, hint: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_when(text, NOW, BERLIN)
    assert hint in str(caught.value)
    assert isinstance(caught.value, ClublistError)  # the CLI and bot show it without traceback


def test_parse_when_needs_an_aware_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_when("18:00", datetime(2026, 11, 18, 12, 0), BERLIN)


# --- parse_every / validate_cron -------------------------------------------------------------


@pytest.mark.parametrize(
    ("phrase", "normal"),
    [
        ("monday 18:00", "monday 18:00"),
        ("every monday 18:00", "monday 18:00"),
        ("Every Mondays at 18:00", "monday 18:00"),
        ("mon,wed 18:00", "monday,wednesday 18:00"),
        ("wed, mon and fri 18:00", "monday,wednesday,friday 18:00"),
        ("day 07:00", "day 07:00"),
        ("every day 7:00", "day 07:00"),
        ("daily 07:00", "day 07:00"),
        ("mon,tue,wed,thu,fri,sat,sun 07:00", "day 07:00"),
        ("weekday 07:00", "weekday 07:00"),
        ("every weekdays 07:00", "weekday 07:00"),
        ("month 1 10:00", "month 1 10:00"),
        ("1st of the month 10:00", "month 1 10:00"),
        ("every 15th of each month 10:00", "month 15 10:00"),
        ("first monday of the month 10:00", "first monday of the month 10:00"),
        ("last friday of the month 19:00", "last friday of the month 19:00"),
        ("second tuesday of every month 19:00", "second tuesday of the month 19:00"),
        ("3rd thu of the month 19:00", "third thursday of the month 19:00"),
    ],
)
def test_parse_every_normalises(phrase: str, normal: str) -> None:
    assert parse_every(phrase) == normal
    assert parse_every(normal) == normal


@pytest.mark.parametrize(
    ("phrase", "hint"),
    [
        ("week 18:00", "say which days, e.g. 'monday 18:00'"),
        ("every monday", "needs days and then a time of day"),
        ("", "needs days and then a time of day"),
        ("monday 25:00", "HH:MM"),
        ("mon,,wed 18:00", "e.g."),
        ("fifth monday of the month 10:00", "'first monday of the month 10:00'"),
        ("first foo of the month 10:00", "e.g."),
        ("month 32 10:00", "no day 32"),
        ("month 0 10:00", "no day 0"),
    ],
)
def test_parse_every_explains_bad_phrases(phrase: str, hint: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_every(phrase)
    assert hint in str(caught.value)


def test_validate_cron_normalises_spacing() -> None:
    assert validate_cron("  0  18 * *   1 ") == "0 18 * * 1"


@pytest.mark.parametrize(
    ("expr", "hint"),
    [
        ("0 18 * *", "has 4 field(s); a cron expression has 5"),
        ("@daily", "has 1 field(s)"),
        ("0 0 18 * * 1", "has 6 field(s)"),
        ("61 * * * *", "not a valid cron expression"),
        ("0 18 * * funday", "not a valid cron expression"),
        ("0 0 30 2 *", "never fires"),
    ],
)
def test_validate_cron_explains_bad_expressions(expr: str, hint: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        validate_cron(expr)
    assert hint in str(caught.value)
    assert "e.g. '0 18 * * 1'" in str(caught.value)


# --- occurrences ------------------------------------------------------------------------------

WEEKLY = Schedule("every", "every monday 18:00")


def test_weekly_fires_once_a_week_for_five_weeks() -> None:
    found = occurrences(WEEKLY, BERLIN, berlin(2026, 11, 2), berlin(2026, 12, 7))
    assert [t.date().isoformat() for t in found] == [
        "2026-11-02",
        "2026-11-09",
        "2026-11-16",
        "2026-11-23",
        "2026-11-30",
    ]
    assert len({t.isocalendar().week for t in found}) == 5
    assert all((t.weekday(), t.hour, t.minute, t.tzinfo) == (0, 18, 0, BERLIN) for t in found)


@pytest.mark.parametrize("schedule", [WEEKLY, Schedule("cron", "0 18 * * 1")])
@pytest.mark.parametrize(
    ("after", "upto", "offsets"),
    [
        (berlin(2026, 10, 12), berlin(2026, 11, 3), [2, 2, 1, 1]),  # clocks go back Oct 25
        (berlin(2026, 3, 16), berlin(2026, 4, 7), [1, 1, 2, 2]),  # clocks go forward Mar 29
    ],
)
def test_wall_clock_kept_across_dst(
    schedule: Schedule, after: datetime, upto: datetime, offsets: list[int]
) -> None:
    found = occurrences(schedule, BERLIN, after, upto)
    assert [(t.weekday(), t.hour, t.minute) for t in found] == [(0, 18, 0)] * 4
    assert [hours(t.utcoffset()) for t in found] == offsets
    assert [t.astimezone(UTC).hour for t in found] == [18 - o for o in offsets]


def test_skipped_wall_time_fires_at_the_end_of_the_gap() -> None:
    daily = Schedule("every", "day 02:30")
    found = occurrences(daily, BERLIN, berlin(2026, 3, 28), berlin(2026, 3, 31))
    assert [t.isoformat() for t in found] == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]


def test_several_skipped_cron_times_fire_once() -> None:
    every_20 = Schedule("cron", "*/20 2,3 * * *")
    found = occurrences(every_20, BERLIN, berlin(2026, 3, 29), berlin(2026, 3, 29, 12))
    assert [t.isoformat() for t in found] == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:20:00+02:00",
        "2026-03-29T03:40:00+02:00",
    ]


def test_repeated_wall_time_fires_once_at_the_first_instant() -> None:
    daily = Schedule("every", "day 02:30")
    found = occurrences(daily, BERLIN, berlin(2026, 10, 24, 12), berlin(2026, 10, 26))
    assert [t.isoformat() for t in found] == ["2026-10-25T02:30:00+02:00"]
    half_hourly = Schedule("cron", "*/30 2 * * *")
    found = occurrences(half_hourly, BERLIN, berlin(2026, 10, 25), berlin(2026, 10, 25, 12))
    assert [t.isoformat() for t in found] == ["2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00"]


def test_new_york_dst_changes() -> None:
    start = datetime(2026, 3, 1, tzinfo=NEW_YORK)
    sundays = occurrences(Schedule("every", "sunday 02:30"), NEW_YORK, start, start + timedelta(15))
    assert [t.isoformat() for t in sundays] == [
        "2026-03-01T02:30:00-05:00",
        "2026-03-08T03:00:00-04:00",
        "2026-03-15T02:30:00-04:00",
    ]
    autumn = datetime(2026, 10, 31, 12, tzinfo=NEW_YORK)
    nightly = occurrences(Schedule("cron", "30 1 * * *"), NEW_YORK, autumn, autumn + timedelta(2))
    assert [t.isoformat() for t in nightly] == ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]


@pytest.mark.parametrize(
    ("phrase", "days"),
    [
        ("first monday of the month 10:00", ["01-05", "02-02", "03-02", "04-06", "05-04", "06-01"]),
        ("last friday of the month 19:00", ["01-30", "02-27", "03-27", "04-24", "05-29", "06-26"]),
        ("second tuesday of the month 19:00", ["01-13", "02-10", "03-10", "04-14", "05-12", "06-09"]),
        ("month 31 10:00", ["01-31", "03-31", "05-31"]),  # months without a 31st are skipped
    ],
)
def test_monthly_phrases(phrase: str, days: list[str]) -> None:
    found = occurrences(Schedule("every", phrase), BERLIN, berlin(2026, 1, 1), berlin(2026, 7, 1))
    assert [f"{t:%m-%d}" for t in found] == days
    assert {f"{t:%H:%M}" for t in found} == {phrase[-5:]}


def test_window_excludes_after_and_includes_upto() -> None:
    monday = berlin(2026, 11, 9, 18, 0)
    assert occurrences(WEEKLY, BERLIN, monday, monday + timedelta(days=7)) == [berlin(2026, 11, 16, 18, 0)]
    assert occurrences(WEEKLY, BERLIN, monday, monday) == []


@pytest.mark.parametrize(
    "schedule", [WEEKLY, Schedule("every", "day 02:30"), Schedule("cron", "*/30 1-3 * * *")]
)
def test_adjacent_windows_never_duplicate(schedule: Schedule) -> None:
    edges = [
        berlin(2026, 10, 19),
        berlin(2026, 10, 25, 2, 0),
        berlin(2026, 10, 25, 2, 30),
        berlin(2026, 10, 25, 2, 30, fold=1),
        berlin(2026, 10, 26, 18, 0),
        berlin(2026, 11, 9),
    ]
    pieces = [t for a, b in pairwise(edges) for t in occurrences(schedule, BERLIN, a, b)]
    whole = occurrences(schedule, BERLIN, edges[0], edges[-1])
    assert pieces == whole
    assert len({t.astimezone(UTC) for t in whole}) == len(whole) > 0


def test_bounds_inside_the_repeated_hour_compare_instants() -> None:
    daily = Schedule("every", "day 02:30")
    first_pass, second_pass = berlin(2026, 10, 25, 2, 15), berlin(2026, 10, 25, 2, 15, fold=1)
    # the first 02:30 lies between the first and the second 02:15
    assert len(occurrences(daily, BERLIN, first_pass, berlin(2026, 10, 25, 12))) == 1
    assert occurrences(daily, BERLIN, second_pass, berlin(2026, 10, 25, 12)) == []
    assert occurrences(daily, BERLIN, berlin(2026, 10, 25), second_pass) == [berlin(2026, 10, 25, 2, 30)]


def test_until_is_inclusive() -> None:
    schedule = Schedule("every", "monday 18:00", until=berlin(2026, 11, 16, 18, 0))
    found = occurrences(schedule, BERLIN, berlin(2026, 11, 1), berlin(2027, 1, 1))
    assert [t.day for t in found] == [2, 9, 16]
    assert next_occurrence(schedule, BERLIN, berlin(2026, 11, 16, 18, 0)) is None


def test_count_numbers_from_start_whatever_the_window() -> None:
    schedule = Schedule("every", "monday 18:00", count=3, start=berlin(2026, 11, 1, 12, 0))
    everything = occurrences(schedule, BERLIN, berlin(2026, 1, 1), berlin(2027, 1, 1))
    assert [t.day for t in everything] == [2, 9, 16]
    on_the_second = berlin(2026, 11, 9, 18, 0)
    assert occurrences(schedule, BERLIN, on_the_second, berlin(2027, 1, 1)) == [everything[2]]
    assert next_occurrence(schedule, BERLIN, berlin(2026, 11, 17)) is None


def test_start_is_inclusive_and_earlier_occurrences_never_happen() -> None:
    window = (berlin(2026, 11, 1), berlin(2026, 11, 30))
    on_time = Schedule("every", "monday 18:00", start=berlin(2026, 11, 9, 18, 0))
    late = Schedule("every", "monday 18:00", start=berlin(2026, 11, 9, 18, 1))
    assert [t.day for t in occurrences(on_time, BERLIN, *window)] == [9, 16, 23]
    assert [t.day for t in occurrences(late, BERLIN, *window)] == [16, 23]


@pytest.mark.parametrize("expr", ["2026-12-01T18:00+01:00", "2026-12-01T17:00:00+00:00", "2026-12-01T18:00"])
def test_at_fires_once(expr: str) -> None:
    once = Schedule("at", expr)
    fire = berlin(2026, 12, 1, 18, 0)
    assert occurrences(once, BERLIN, NOW, berlin(2027, 1, 1)) == [fire]
    assert occurrences(once, BERLIN, fire, berlin(2027, 1, 1)) == []
    assert next_occurrence(once, BERLIN, NOW) == fire
    assert next_occurrence(once, BERLIN, fire) is None


def test_at_before_start_never_happens() -> None:
    once = Schedule("at", "2026-12-01T18:00+01:00", start=berlin(2026, 12, 2))
    assert next_occurrence(once, BERLIN, NOW) is None


def test_next_occurrence() -> None:
    schedule = Schedule("every", "first monday of the month 10:00")
    assert next_occurrence(schedule, BERLIN, NOW) == berlin(2026, 12, 7, 10, 0)
    cron = Schedule("cron", "0 18 * * 1")
    assert next_occurrence(cron, BERLIN, NOW) == berlin(2026, 11, 23, 18, 0)


def test_occurrences_are_truncated_and_can_be_paged() -> None:
    minutely = Schedule("cron", "* * * * *")
    after, upto = berlin(2026, 11, 1), berlin(2026, 11, 9)  # 8 days = 11,520 minutes
    first = occurrences(minutely, BERLIN, after, upto)
    assert len(first) == MAX_OCCURRENCES
    assert first[0] == after + timedelta(minutes=1)
    rest = occurrences(minutely, BERLIN, first[-1], upto)
    assert len(rest) == 8 * 24 * 60 - MAX_OCCURRENCES
    assert rest[0] == first[-1] + timedelta(minutes=1)
    assert rest[-1] == upto


@pytest.mark.parametrize(
    ("schedule", "hint"),
    [
        (Schedule("every", "week 18:00"), "say which days"),
        (Schedule("cron", "0 18 * *"), "5"),
        (Schedule("at", "next tuesday"), "not an ISO date-time"),
    ],
)
def test_bad_expression_is_reported_when_used(schedule: Schedule, hint: str) -> None:
    with pytest.raises(ScheduleError, match=hint):
        occurrences(schedule, BERLIN, NOW, NOW + timedelta(days=30))


@pytest.mark.parametrize(
    ("kwargs", "hint"),
    [
        ({"kind": "weekly", "expr": "monday 18:00"}, "unknown schedule kind"),
        ({"kind": "every", "expr": "monday 18:00", "until": datetime(2027, 1, 1)}, "time zone"),
        ({"kind": "every", "expr": "monday 18:00", "start": datetime(2026, 1, 1)}, "time zone"),
        ({"kind": "every", "expr": "monday 18:00", "count": 0, "start": NOW}, "at least 1"),
        ({"kind": "every", "expr": "monday 18:00", "count": 3}, "needs a start"),
    ],
)
def test_schedule_refuses_unusable_fields(kwargs: dict, hint: str) -> None:
    with pytest.raises(ScheduleError, match=hint):
        Schedule(**kwargs)


def test_occurrences_need_aware_bounds() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        occurrences(WEEKLY, BERLIN, datetime(2026, 11, 1), NOW)
