"""When reminders fall due: parse the times and schedules people type, list occurrences.

Pure functions with an explicit ``now`` (no clock, no I/O), so ``clublist remind`` and the
tests decide what time it is.  Recurring schedules follow the local wall clock across DST.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from clublist.errors import ClublistError

# occurrences() returns at most this many; a caller pages on with after=result[-1].
MAX_OCCURRENCES = 10_000

_WHEN_EXAMPLES = "'2026-12-01 18:00', 'tomorrow 18:00', 'monday 18:00', '18:00' or 'in 2 hours'"
_EVERY_EXAMPLES = (
    "'monday 18:00', 'mon,wed 18:00', 'day 07:00', 'weekday 07:00', 'month 1 10:00', "
    "'first monday of the month 10:00' or 'last friday of the month 19:00'"
)
_CRON_EXAMPLE = "'0 18 * * 1' (Mondays at 18:00)"

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKDAY_NAMES = {
    alias: number for number, name in enumerate(_WEEKDAYS) for alias in (name, name[:3], name + "s")
}
_ORDINALS = {
    "first": 1,
    "1st": 1,
    "second": 2,
    "2nd": 2,
    "third": 3,
    "3rd": 3,
    "fourth": 4,
    "4th": 4,
    "last": -1,
}
_ORDINAL_WORDS = {1: "first", 2: "second", 3: "third", 4: "fourth", -1: "last"}
_ALL_DAYS = frozenset(range(7))
_WORKDAYS = frozenset(range(5))

_TIME_RE = re.compile(r"(\d{1,2}):(\d{2})")
_IN_RE = re.compile(r"in (\d+) (minute|min|hour|day|week)s?")
_DAY_AT_RE = re.compile(r"(?:(today|tomorrow|(?:next )?[a-z]+) )?(?:at )?(\d{1,2}):(\d{2})")
_ISO_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_OF_MONTH = r"of (?:the |each |every )?month"
_MONTHDAY_RE = re.compile(rf"month (\d+)|(?:the )?(\d+)(?:st|nd|rd|th)? (?:day )?{_OF_MONTH}")
_NTH_RE = re.compile(rf"({'|'.join(_ORDINALS)}) ([a-z]+) {_OF_MONTH}")


class ScheduleError(ClublistError, ValueError):
    """A time or schedule that cannot be used; the message says why, with an example."""


@dataclass(frozen=True)
class Schedule:
    """When a reminder fires.  ``until`` and ``start`` are inclusive bounds.

    ``count`` numbers occurrences from ``start`` (the reminder's creation time), so the
    answer never depends on which window a caller asks about; a recurring schedule with a
    count therefore needs a start.  The expression itself is checked when it is used
    (``parse_every``/``validate_cron`` at creation), so loading reminders stays cheap.
    """

    kind: Literal["at", "every", "cron"]
    expr: str
    until: datetime | None = None
    count: int | None = None
    start: datetime | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("at", "every", "cron"):
            raise ScheduleError(f"unknown schedule kind {self.kind!r}; use 'at', 'every' or 'cron'")
        for name in ("until", "start"):
            value = getattr(self, name)
            if value is not None and value.utcoffset() is None:
                raise ScheduleError(
                    f"{name} {value} has no time zone; give it with an offset, e.g. 2026-12-01T18:00+01:00"
                )
        if self.count is not None:
            if self.count < 1:
                raise ScheduleError(f"count must be at least 1, not {self.count}")
            if self.start is None and self.kind != "at":
                raise ScheduleError(
                    "a count needs a start time to count from, e.g. the time the reminder was created"
                )


@dataclass(frozen=True)
class _Rule:
    """A parsed recurring phrase: a time of day on the dates that match."""

    at: time
    weekdays: frozenset[int] = _ALL_DAYS
    monthday: int | None = None
    nth: int | None = None  # 1..4 or -1 (last): which of the month's `weekdays` it is

    def matches(self, day: date) -> bool:
        if day.weekday() not in self.weekdays:
            return False
        if self.monthday is not None:
            return day.day == self.monthday
        if self.nth == -1:
            return day.day + 7 > calendar.monthrange(day.year, day.month)[1]
        return self.nth is None or (day.day - 1) // 7 + 1 == self.nth

    def text(self) -> str:
        hhmm = f"{self.at:%H:%M}"
        if self.monthday is not None:
            return f"month {self.monthday} {hhmm}"
        names = ",".join(_WEEKDAYS[d] for d in sorted(self.weekdays))
        if self.nth is not None:
            return f"{_ORDINAL_WORDS[self.nth]} {names} of the month {hhmm}"
        if self.weekdays == _ALL_DAYS:
            return f"day {hhmm}"
        if self.weekdays == _WORKDAYS:
            return f"weekday {hhmm}"
        return f"{names} {hhmm}"


def parse_when(text: str, now: datetime, tz: ZoneInfo) -> datetime:
    """Turn a one-off time a person typed into an aware datetime in ``tz``, later than ``now``.

    Forms: ISO date-time (with or without offset), ``today/tomorrow [at] HH:MM``,
    ``[next] monday HH:MM`` (the next such day strictly after today), ``HH:MM`` (today),
    ``in N minutes/hours/days/weeks``.  A typed local time that DST skips or repeats is refused
    with a suggestion, because guessing would send a reminder an hour off.  ``in N days``
    keeps the wall-clock time (18:00 stays 18:00 across a DST change).
    """
    now_utc = _to_utc(now, "now")
    raw = " ".join(text.split())
    try:
        if _ISO_DATE_RE.match(raw):
            when = _parse_iso(raw, tz)
        else:
            when = _parse_relative(raw.lower(), now_utc.astimezone(tz), tz)
    except OverflowError:
        raise ScheduleError(f"'{raw}' is too far in the future") from None
    if when <= now_utc:
        local = when.astimezone(tz)
        raise ScheduleError(
            f"'{raw}' is {local:%Y-%m-%d %H:%M}, which is in the past (it is now "
            f"{now_utc.astimezone(tz):%Y-%m-%d %H:%M} {tz}); give a later time, e.g. "
            f"'tomorrow {local:%H:%M}'"
        )
    return when.astimezone(tz)


def parse_every(phrase: str) -> str:
    """Check a recurring phrase and return its canonical form (``parse_every`` accepts it again).

    Canonical forms: ``monday 18:00``, ``monday,wednesday 18:00``, ``day 07:00``,
    ``weekday 07:00``, ``month 1 10:00``, ``first monday of the month 10:00``.
    A ``month N`` schedule skips months without day N, as cron does.
    """
    return _parse_rule(phrase).text()


def validate_cron(expr: str) -> str:
    """Check a 5-field cron expression (croniter syntax) and return it with spaces normalised."""
    fields = expr.split()
    if len(fields) != 5:
        raise ScheduleError(
            f"'{expr}' has {len(fields)} field(s); a cron expression has 5 "
            f"(minute hour day-of-month month day-of-week), e.g. {_CRON_EXAMPLE}"
        )
    normal = " ".join(fields)
    from croniter import CroniterBadCronError, CroniterBadDateError, croniter

    try:
        croniter(normal, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadCronError as exc:
        raise ScheduleError(
            f"'{normal}' is not a valid cron expression ({exc}); e.g. {_CRON_EXAMPLE}"
        ) from None
    except CroniterBadDateError:
        raise ScheduleError(
            f"'{normal}' never fires (a date that does not exist?); e.g. {_CRON_EXAMPLE}"
        ) from None
    return normal


def occurrences(schedule: Schedule, tz: ZoneInfo, after: datetime, upto: datetime) -> list[datetime]:
    """All occurrences t with ``after < t <= upto``, oldest first, as aware datetimes in ``tz``.

    The half-open window means adjacent windows (a, b], (b, c] never repeat an occurrence.
    Wall-clock semantics: a local time that a spring-forward skips fires at the first instant
    after the gap (02:30 on a 02:00->03:00 day fires at 03:00); one that a fall-back repeats
    fires once, at its first (fold=0) instant.  At most ``MAX_OCCURRENCES`` are returned (the
    earliest); call again with ``after=result[-1]`` for the rest.
    """
    upto_utc = _to_utc(upto, "upto")
    found: list[datetime] = []
    for when in _iter_occurrences(schedule, tz, _to_utc(after, "after")):
        if when > upto_utc or len(found) == MAX_OCCURRENCES:
            break
        found.append(when)
    return found


def next_occurrence(schedule: Schedule, tz: ZoneInfo, now: datetime) -> datetime | None:
    """The first occurrence strictly after ``now``, or None when the schedule is over."""
    return next(_iter_occurrences(schedule, tz, _to_utc(now, "now")), None)


def _iter_occurrences(schedule: Schedule, tz: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """Occurrences after ``after`` (UTC) in order, honouring start, until and count."""
    until = schedule.until.astimezone(UTC) if schedule.until else None
    count = schedule.count
    lower = after
    if schedule.start is not None:
        just_before_start = schedule.start.astimezone(UTC) - timedelta(microseconds=1)
        # With a count, walk from start so the numbering is the same whatever the window.
        lower = just_before_start if count is not None else max(after, just_before_start)
    for number, when in enumerate(_instants(schedule, tz, lower), 1):
        if (until is not None and when > until) or (count is not None and number > count):
            return
        if when > after:
            yield when.astimezone(tz)


def _instants(schedule: Schedule, tz: ZoneInfo, lower: datetime) -> Iterator[datetime]:
    """The schedule's instants (UTC) strictly after ``lower``, strictly increasing."""
    if schedule.kind == "at":
        when = _parse_at(schedule.expr, tz)
        if when > lower:
            yield when
        return
    start_wall = lower.astimezone(tz).replace(tzinfo=None)
    if schedule.kind == "every":
        walls = _rule_walls(_parse_rule(schedule.expr), start_wall.date())
    else:
        walls = _cron_walls(validate_cron(schedule.expr), start_wall)
    previous = lower
    for wall in walls:
        when = _wall_to_utc(wall, tz)
        if when > previous:  # skipped times collapse onto the gap's end: fire once
            yield when
            previous = when


def _rule_walls(rule: _Rule, day: date) -> Iterator[datetime]:
    """Local wall times of ``rule`` from ``day`` on."""
    while True:
        if rule.matches(day):
            yield datetime.combine(day, rule.at)
        if day == date.max:
            return
        day += timedelta(days=1)


def _cron_walls(expr: str, start: datetime) -> Iterator[datetime]:
    """Local wall times of a cron expression after ``start`` (croniter on naive wall time)."""
    from croniter import CroniterBadDateError, croniter

    walls = croniter(expr, start)
    while True:
        try:
            yield walls.get_next(datetime)
        except CroniterBadDateError:  # ran off croniter's calendar: the schedule ends
            return


def _parse_rule(phrase: str) -> _Rule:
    words = " ".join(phrase.lower().split())
    words = words.removeprefix("every ")
    body, _, last = words.rpartition(" ")
    match = _TIME_RE.fullmatch(last)
    if not match or not body:
        raise ScheduleError(f"'{phrase}' needs days and then a time of day, e.g. {_EVERY_EXAMPLES}")
    hour, minute = match.groups()
    at = _time_of_day(hour, minute, phrase)
    body = body.removesuffix(" at")
    if body in ("day", "daily"):
        return _Rule(at)
    if body in ("weekday", "weekdays"):
        return _Rule(at, _WORKDAYS)
    if month := _MONTHDAY_RE.fullmatch(body):
        monthday = int(month.group(1) or month.group(2))
        if not 1 <= monthday <= 31:
            raise ScheduleError(f"a month has no day {monthday}; e.g. 'month 1 10:00'")
        return _Rule(at, monthday=monthday)
    nth = _NTH_RE.fullmatch(body)
    if nth and nth.group(2) in _WEEKDAY_NAMES:
        return _Rule(at, frozenset({_WEEKDAY_NAMES[nth.group(2)]}), nth=_ORDINALS[nth.group(1)])
    names = re.split(r"\s*,\s*|\s+and\s+", body)
    if not nth and all(name in _WEEKDAY_NAMES for name in names):
        return _Rule(at, frozenset(_WEEKDAY_NAMES[name] for name in names))
    raise ScheduleError(
        f"cannot understand '{body}' in '{phrase}' as days; say which days, e.g. {_EVERY_EXAMPLES}"
    )


def _parse_iso(raw: str, tz: ZoneInfo) -> datetime:
    if _ISO_DATE_RE.fullmatch(raw):
        raise ScheduleError(f"'{raw}' has no time of day; e.g. '{raw} 18:00'")
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise ScheduleError(f"'{raw}' is not a date and time; e.g. {_WHEN_EXAMPLES}") from None
    if when.utcoffset() is not None:
        return when.astimezone(UTC)
    return _strict_wall_to_utc(when, tz)


def _parse_relative(text: str, now: datetime, tz: ZoneInfo) -> datetime:
    """Parse the non-ISO forms of parse_when; ``now`` is local in ``tz``."""
    if match := _IN_RE.fullmatch(text):
        amount, unit = int(match.group(1)), match.group(2)
        if unit in ("min", "minute", "hour"):
            minutes = amount * (60 if unit == "hour" else 1)
            return now.astimezone(UTC) + timedelta(minutes=minutes)
        days = amount * (7 if unit == "week" else 1)
        return _wall_to_utc(now.replace(tzinfo=None) + timedelta(days=days), tz)
    match = _DAY_AT_RE.fullmatch(text)
    if not match:
        raise ScheduleError(f"cannot understand '{text}' as a time; e.g. {_WHEN_EXAMPLES}")
    day_word, hour, minute = match.groups()
    today = now.date()
    if day_word in (None, "today"):
        day = today
    elif day_word == "tomorrow":
        day = today + timedelta(days=1)
    elif (weekday := _WEEKDAY_NAMES.get(day_word.removeprefix("next "))) is not None:
        day = today + timedelta(days=(weekday - today.weekday() - 1) % 7 + 1)
    else:
        raise ScheduleError(f"cannot understand '{day_word}' in '{text}'; e.g. {_WHEN_EXAMPLES}")
    at = _time_of_day(hour, minute, text)
    return _strict_wall_to_utc(datetime.combine(day, at), tz)


def _parse_at(expr: str, tz: ZoneInfo) -> datetime:
    """The instant of an "at" schedule: its offset if it has one, else the wall clock in tz."""
    try:
        when = datetime.fromisoformat(expr.strip())
    except ValueError:
        raise ScheduleError(f"'{expr}' is not an ISO date-time; e.g. 2026-12-01T18:00+01:00") from None
    return when.astimezone(UTC) if when.utcoffset() is not None else _wall_to_utc(when, tz)


def _time_of_day(hour: str, minute: str, text: str) -> time:
    if int(hour) > 23 or int(minute) > 59:
        raise ScheduleError(f"no valid time of day in '{text}'; use HH:MM, e.g. 18:00")
    return time(int(hour), int(minute))


def _to_utc(when: datetime, name: str) -> datetime:
    """UTC copy of an aware datetime: same-zone datetimes compare by wall time, ignoring fold."""
    if when.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {when!r}")
    return when.astimezone(UTC)


def _is_skipped(wall: datetime, tz: ZoneInfo) -> bool:
    """True when the clocks jump over this local time (spring forward)."""
    return wall.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None) != wall


def _gap_end(wall: datetime, tz: ZoneInfo) -> datetime:
    """The first instant (UTC) after the DST gap that swallows ``wall``, found by bisection."""
    # Inside a gap, fold=0 reads the wall time with the earlier offset and fold=1 with the
    # later one; the transition (a whole second) lies between the two readings.
    lo, hi = sorted(int(wall.replace(tzinfo=tz, fold=f).timestamp()) for f in (0, 1))
    before = datetime.fromtimestamp(lo, tz).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return datetime.fromtimestamp(hi, UTC)


def _wall_to_utc(wall: datetime, tz: ZoneInfo) -> datetime:
    """The instant a recurring wall time fires: after a gap if skipped, the first if repeated."""
    if _is_skipped(wall, tz):
        return _gap_end(wall, tz)
    return wall.replace(tzinfo=tz, fold=0).astimezone(UTC)


def _strict_wall_to_utc(wall: datetime, tz: ZoneInfo) -> datetime:
    """The instant of a local time a person typed; refuse one DST skips or repeats."""
    if _is_skipped(wall, tz):
        first_valid = _gap_end(wall, tz).astimezone(tz)
        raise ScheduleError(
            f"{wall:%Y-%m-%d %H:%M} does not exist in {tz}: the clocks go forward then; "
            f"use a time after the change, e.g. {first_valid:%Y-%m-%d %H:%M}, "
            f"or give the UTC offset, e.g. {first_valid.isoformat(timespec='minutes')}"
        )
    first, second = (wall.replace(tzinfo=tz, fold=f) for f in (0, 1))
    if first.utcoffset() != second.utcoffset():
        raise ScheduleError(
            f"{wall:%Y-%m-%d %H:%M} happens twice in {tz}: the clocks go back then; "
            f"give the UTC offset to say which, {first.isoformat(timespec='minutes')} (the first) "
            f"or {second.isoformat(timespec='minutes')} (the second)"
        )
    return first.astimezone(UTC)
