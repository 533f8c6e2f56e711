"""Where an accepted post's time goes: each step of clublist's DATA handling, timed in-process.

Not a target, a profiling aid for ``inbound.py``: the same post as the
inbound benchmark (about 3.7 KB, plain text, from a member to a list of 3),
each step run ``--loops`` times after a warm-up, mean microseconds per
call.  The steps follow ``InboundHandler._data`` and ``_post`` (they call
clublist's internal functions, so this file follows their names); for
comparison, a parse with the compat32 policy and ``email.utils``.

The commit is ``enqueue.enqueue_post`` through the daemon's
``state.Writer`` (one transaction, synchronous=FULL) on the default temp
file system, one at a time and four at a time (group commit).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import email.utils
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchlib import DOMAIN, argument_parser, make_club, make_post, say, temporary_root, write_json


def per_call(loops: int, step: Callable[[], Any]) -> float:
    """Mean microseconds per call of *step*, after one warm-up call."""
    step()
    start = time.perf_counter()
    for _ in range(loops):
        step()
    return (time.perf_counter() - start) / loops * 1e6


def commit_rate(state_path: Path, job: Callable[[Any], Any], messages: int, concurrency: int) -> float:
    """Microseconds per message for *messages* commits through state.Writer, *concurrency* at a time."""
    from clublist.state import db as state

    async def run() -> float:
        writer = state.Writer(state_path)
        try:
            start = time.perf_counter()
            for _ in range(0, messages, concurrency):
                await asyncio.gather(*(writer.run(job) for _ in range(concurrency)))
            return (time.perf_counter() - start) / messages * 1e6
        finally:
            writer.close()

    return asyncio.run(run())


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--loops", type=int, default=300)
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()

    from clublist.club.store import Store
    from clublist.mail import decorate, rules
    from clublist.mail import enqueue as posting
    from clublist.mail.handler import _author

    with temporary_root("parts") as root:
        club_files = make_club(root, {"youth": 3}, settings={"posting.daily_limit": "0"})
        club = Store(club_files.directory).load()
        mailing_list = club.lists["youth"]
        raw = make_post(club_files.author, f"youth@{DOMAIN}")

        message = decorate.parse(raw)
        from_address = decorate.sole_address(message, "From")
        author = _author(club, from_address, club_files.author)
        assert author is not None

        def evaluate() -> rules.Verdict:
            post = rules.Post(
                message=message,
                size=len(raw),
                envelope_sender=club_files.author,
                mailing_list=mailing_list,
                club=club,
                author=author,
                posts_today=0,
                from_address=from_address,
            )
            return rules.evaluate(post)

        def prepare() -> posting.ReadyPost:
            return posting.prepare_post(
                message,
                mailing_list,
                club,
                author,
                rewrite_from=True,
                subject="bench",
                from_address=from_address,
            )

        default_parsed = email.message_from_bytes(raw, policy=email.policy.default)
        compat = email.message_from_bytes(raw)
        loops = args.loops
        figures: dict[str, float] = {
            "parse (decorate.parse: header section, compat32)": per_call(loops, lambda: decorate.parse(raw)),
            "decorate.sole_address(From)": per_call(loops, lambda: decorate.sole_address(message, "From")),
            "_author (member lookup)": per_call(
                loops, lambda: _author(club, from_address, club_files.author)
            ),
            "rules.evaluate": per_call(loops, evaluate),
            "enqueue.prepare_post (decorate.decorate, wire bytes, recipients)": per_call(loops, prepare),
            "enqueue.recipients": per_call(
                loops, lambda: posting.recipients(club, mailing_list, author.key, set())
            ),
            "compare: parse with policy.default": per_call(
                loops, lambda: email.message_from_bytes(raw, policy=email.policy.default)
            ),
            "compare: policy.default message['From'].addresses (each access parses)": per_call(
                loops, lambda: default_parsed["From"].addresses
            ),
            "compare: parse with compat32": per_call(loops, lambda: email.message_from_bytes(raw)),
            "compare: compat32 getaddresses(From)": per_call(
                loops, lambda: email.utils.getaddresses(compat.get_all("From", []))
            ),
            "compare: compat32 as_bytes": per_call(loops, compat.as_bytes),
        }
        ready = prepare()

        def job(conn: Any) -> str:
            return posting.enqueue_post(conn, club, ready, time.time())

        for concurrency in (1, 4):
            path = root / f"state-{concurrency}.sqlite3"
            figures[f"commit via state.Writer, {concurrency} at a time"] = commit_rate(
                path, job, args.commits, concurrency
            )

    say(f"Steps of accepting one post ({len(raw)} bytes), microseconds per call (mean of {loops}):")
    for name, micros in figures.items():
        say(f"  {micros:8.1f} us  {name}")
    write_json(args.json, {"inbound_parts_us": figures})


if __name__ == "__main__":
    main()
