"""The mail bot: commands mailed to bot@ or LIST-request@, run as CLI command lines.

Each line of the text body is split like a shell would split it (never
given to one) and run through the same click commands and actions as at
the shell, with the sender's rights; the Subject (without its "Re:",
"Fwd:", "AW:", "WG:" prefixes) is read only when the body holds no
command, and quoted text (lines starting with ">", or below "On ... wrote:"
or "-----Original Message-----") never.  Friendly words ("subscribe
trainer", "who youth") become the CLI lines they stand for.

A header From can be forged, so a command that changes anything runs only
after a round trip: the reply carries a one-time token, and the change is
made when ``confirm TOKEN`` comes back from that same address before it
expires; a reply to that message (its Message-ID carries the token) with no
command of its own confirms too, so "Re: unsubscribe" does not ask again.
A sender whose mail is authenticated (From is the sender and its
domain passed SPF or DKIM in alignment, as for posts) skips it: see
:func:`needs_confirmation`.

A reply to a hold notice (it names the notice's token in In-Reply-To, References or the
Subject) is moderation: its first command line, "approve", "reject REASON" or "discard",
runs ``held approve|reject|discard`` on that post.  The token went only to the list's
owners, so, like a confirmation token, it counts only from an address the notice was sent
to, and only while that address still owns the list: that reply is the round trip.

The bot answers each message once, from bot@ with ``Auto-Submitted:
auto-replied`` (RFC 3834), and never answers automatic mail, so it cannot
loop with an auto-responder.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import io
import logging
import re
import secrets
import shlex
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage, Message
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click

from clublist.actions import Actor
from clublist.bounces import dsn
from clublist.cli.app import AUDIENCES, App
from clublist.club import changes
from clublist.club.model import address_key
from clublist.club.store import Club
from clublist.errors import ClublistError
from clublist.mail import moderation
from clublist.mail.handler import CommitJob, Target
from clublist.outbound import reports
from clublist.state import queue

log = logging.getLogger(__name__)

MAX_COMMANDS = 20
MAX_ERRORS = 3
MAX_TEXT = 64 * 1024
REPLIES_PER_HOUR = 10
CONFIRM_SECONDS = 3 * 24 * 3600
_MODERATION_VERBS = ("approve", "reject", "discard")
INDEX_LENGTH = 20  # posts "index LIST" shows
_STOP_WORDS = {"end", "thanks", "thank you", "--", "-- "}
_AUTOMATIC_LOCAL_PARTS = ("mailer-daemon", "postmaster", "noreply", "no-reply", "bounces", "listserv")


@dataclass
class Result:
    """What one command line did, for the reply."""

    line: str
    text: str
    ok: bool = True
    understood: bool = True  # False: not a command at all (typo, prose, an auto-reply's text)
    attachments: list[bytes] = field(default_factory=list)  # posts ``get`` fetched from an archive


class UnknownCommand(ClublistError):
    """A line that names no command."""


@dataclass
class Conversation:
    """One message to the bot: its commands, results, and the tokens to store."""

    sender: str
    subject: str
    message_id: str
    results: list[Result] = field(default_factory=list)
    ignored: int = 0
    authenticated: bool = False  # the handler's verdict: may skip the confirmation round trip
    tokens: list[tuple[str, str, str | None]] = field(default_factory=list)  # token, command, list


def needs_confirmation(command: click.Command, authenticated: bool) -> bool:
    """Changes need a confirmation round trip, unless the sender's mail was authenticated."""
    return bool(getattr(command, "mail_changes", True)) and not authenticated


class BotProcessor:
    """The MailProcessor for bot@ and LIST-request@ (see :mod:`clublist.mail.handler`)."""

    def __init__(
        self,
        group: click.Group,
        directory: Path,
        state_path: Path,
        writer_run: Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]],
    ) -> None:
        self.group = group
        self.directory = directory
        self.state_path = state_path
        self.writer_run = writer_run

    def refuse(self, club: Club, target: Target, sender: str) -> str | None:
        from clublist.mail import replies

        if not sender:
            return replies.NULL_SENDER_NOT_ALLOWED
        if club.member(sender) is not None or address_key(sender) == address_key(club.site.site.admin):
            return None
        if any(ml.is_owner(sender) for ml in club.lists.values()):
            return None  # owners need not be members, and answer hold notices
        return replies.NOT_A_MEMBER.format(sender=sender, list=target.address)

    async def process(
        self, club: Club, target: Target, sender: str, raw: bytes, now: float, *, authenticated: bool
    ) -> CommitJob:
        message = email.message_from_bytes(raw, policy=email.policy.default)
        silence = automatic_reason(message, sender)
        if silence:
            log.info("bot: no reply to %s: %s", sender, silence)
            return lambda conn: f"ignored ({silence})"
        recent = await self.writer_run(
            lambda conn: conn.execute(
                "SELECT COUNT(*) FROM bot_replies WHERE address = ? AND sent > ?",
                (address_key(sender), now - 3600),
            ).fetchone()[0]
        )
        if recent >= REPLIES_PER_HOUR:
            log.warning(
                "bot: %s sent more than %d commands mails this hour; ignored", sender, REPLIES_PER_HOUR
            )
            return lambda conn: "ignored (reply limit)"
        confirming = confirmation_in_reply(
            str(message.get("In-Reply-To", "")), str(message.get("References", ""))
        )
        token = moderation.token_in_reply(
            str(message.get("In-Reply-To", "")),
            str(message.get("References", "")),
            str(message.get("Subject", "")),
        )
        # The Subject of a reply to a question or a hold notice repeats that message's.
        lines, ignored = command_lines(message, read_subject=confirming is None and token is None)
        talk = Conversation(
            sender, _one_line(str(message.get("Subject", ""))), str(message.get("Message-ID", ""))
        )
        talk.ignored = ignored
        talk.authenticated = authenticated
        implied = target.mailing_list.name if target.mailing_list else None
        actor = Actor.for_sender(club, sender)
        if token is not None:
            await self._moderate(club, actor, token, lines, talk)
            lines = []
        elif confirming is not None and not any(_looks_like_command(line) for line in lines):
            lines = [f"confirm {confirming}"]  # "Re: unsubscribe" answering the question confirms it
        for line in lines:
            await self._handle(club, actor, implied, line, talk, now)
            if sum(not r.understood for r in talk.results) >= MAX_ERRORS:
                talk.results.append(Result("", f"Stopped after {MAX_ERRORS} lines that were not commands."))
                break
        if not any(r.understood for r in talk.results) and recent:
            # Nothing here was a command and this sender was answered lately: an
            # auto-responder, most likely.  Silence ends any loop.
            log.info("bot: no reply to %s: no commands, and answered within the hour", sender)
            return lambda conn: "ignored (no commands)"
        if not lines and not talk.results:
            talk.results.append(
                Result(
                    "", "No commands found.  Send 'help' for the list of commands.", False, understood=False
                )
            )
        return lambda conn: self._reply(conn, club, talk, now)

    async def _handle(
        self, club: Club, actor: Actor, implied: str | None, line: str, talk: Conversation, now: float
    ) -> None:
        try:
            words = shlex.split(line)
        except ValueError as exc:
            talk.results.append(Result(line, f"Cannot read this line: {exc}", False, understood=False))
            return
        if not words:
            return
        verb = words[0].lower()
        if "--help" in words or "-h" in words:
            talk.results.append(Result(line, _help_of(self.group, words)))
            return
        if verb == "help":
            talk.results.append(Result(line, self.help_text(club, actor)))
            return
        if verb == "confirm":
            await self._confirm(club, actor, line, words, talk, now)
            return
        try:
            zone = ZoneInfo(club.site.site.timezone)
            moment = datetime.fromtimestamp(now, zone)
            argv = translate(words, actor.address or talk.sender, implied, moment, zone)
            command = self._command(argv, club, actor)
        except ClublistError as exc:
            understood = not isinstance(exc, UnknownCommand)
            talk.results.append(Result(line, str(exc), False, understood=understood))
            return
        if needs_confirmation(command, talk.authenticated):
            token = secrets.token_hex(6)
            talk.tokens.append((token, shlex.join(argv), implied))
            talk.results.append(
                Result(line, f"To do this, reply with this line within 3 days:\n\n    confirm {token}")
            )
            return
        talk.results.append(await asyncio.to_thread(self._run, argv, actor, line))

    async def _moderate(
        self, club: Club, actor: Actor, token: str, lines: list[str], talk: Conversation
    ) -> None:
        """An owner's answer to a hold notice: approve, reject REASON or discard that post.

        The first line that starts with one of those words counts (the Subject, "Re: Held
        for ...", is not one); the rest of the reply is the quoted notice and greetings.
        """
        line = next(
            (x for x in lines if x.split()[0].lower() in _MODERATION_VERBS), lines[0] if lines else ""
        )
        try:
            words = shlex.split(line)
        except ValueError:
            words = line.split()
        verb = words[0].lower() if words else ""
        if verb not in _MODERATION_VERBS:
            text = "Answer a hold notice with approve, reject REASON or discard on the first line."
            talk.results.append(Result(line, text, False))
            return
        found = await self.writer_run(lambda conn: moderation.held_by_token(conn, token))
        if found is None:
            talk.results.append(
                Result(line, "That post is no longer held: it was decided or expired.", False)
            )
            return
        mailing_list = club.lists.get(found.post.list_name)
        if (
            address_key(talk.sender) not in found.notified
            or mailing_list is None
            or not actor.may_manage(mailing_list)
        ):
            log.warning(
                "bot: %s answered the hold notice of post %d, which was not sent to them",
                talk.sender,
                found.post.id,
            )
            text = "Only the list's owners, from the address the hold notice went to, decide on it."
            talk.results.append(Result(line, text + "  Nothing was done.", False))
            return
        argv = ["held", verb, str(found.post.id)]
        if verb == "reject" and len(words) > 1:
            argv += ["--reason", " ".join(words[1:])]
        talk.results.append(await asyncio.to_thread(self._run, argv, actor, line))

    async def _confirm(
        self, club: Club, actor: Actor, line: str, words: list[str], talk: Conversation, now: float
    ) -> None:
        token = words[1] if len(words) == 2 else ""

        def claim(conn: sqlite3.Connection) -> str:
            row = conn.execute(
                "SELECT address, command, expires, used FROM confirmations WHERE token = ?", (token,)
            ).fetchone()
            if row is None or row[0] != address_key(talk.sender):
                return ""
            if row[3] is not None or row[2] < now:
                return "!"
            conn.execute("UPDATE confirmations SET used = ? WHERE token = ?", (now, token))
            return str(row[1])

        command = await self.writer_run(claim) if token else ""
        if not command:
            talk.results.append(Result(line, "Unknown token: it was not sent to this address.", False))
        elif command == "!":
            talk.results.append(Result(line, "This token was already used or has expired.", False))
        else:
            argv = shlex.split(str(command))
            try:
                self._command(argv, club, actor)
            except ClublistError as exc:
                talk.results.append(Result(line, str(exc), False))
                return
            talk.results.append(await asyncio.to_thread(self._run, argv, actor, f"{line}: {command}"))

    def _command(self, argv: list[str], club: Club, actor: Actor) -> click.Command:
        """The click command *argv* names, if the sender may run it by mail and its arguments parse."""
        command: click.Command = self.group
        depth = 0
        for word in argv:
            if not isinstance(command, click.Group):
                break
            sub = command.get_command(click.Context(command), word)
            if sub is None:
                raise UnknownCommand(f"Unknown command {word!r}.  Send 'help' for the list of commands.")
            command, depth = sub, depth + 1
        if isinstance(command, click.Group) or not may_use(command, club, actor):
            named = " ".join(argv[: max(depth, 1)])
            raise ClublistError(f"'{named}' cannot be used by mail by you.  Send 'help'.")
        try:  # parse now, so a token is never issued for a line that cannot run
            command.make_context(" ".join(argv[:depth]), argv[depth:], obj=self._app(actor, io.StringIO()))
        except click.UsageError as exc:
            raise ClublistError(exc.format_message()) from None
        return command

    def _app(self, actor: Actor, out: io.StringIO) -> App:
        return App(self.directory, self.state_path, actor=actor, out=out, by_mail=True)

    def _run(self, argv: list[str], actor: Actor, line: str) -> Result:
        """Run one CLI command line with the sender's rights, capturing what it prints."""
        out = io.StringIO()
        app = self._app(actor, out)
        top = self.group.get_command(click.Context(self.group), argv[0])
        assert top is not None
        # The daemon's log names the bot for the members this line may change (see club/changes.py).
        changes.claim("bot", [a for a in (actor.address, *argv) if a and "@" in a])
        try:
            top.main(args=argv[1:], prog_name=f"clublist {argv[0]}", obj=app, standalone_mode=False)
        except ClublistError as exc:
            return Result(line, str(exc), False)
        except click.ClickException as exc:
            return Result(line, exc.format_message(), False)
        except (click.exceptions.Abort, click.exceptions.Exit):
            return Result(line, "Stopped.", False)
        except Exception:
            log.exception("bot: command %r failed", argv)
            return Result(line, "Something went wrong inside clublist; the administrator can see why.", False)
        return Result(line, out.getvalue().rstrip() or "Done.", attachments=list(app.attachments))

    def help_text(self, club: Club, actor: Actor) -> str:
        """The commands this sender may use, from the click definitions."""
        lines = [
            "Commands you can mail to the bot, one per line:",
            "",
            "  help                   this text",
            "  lists                  the club's lists",
            "  info LIST              about one list",
            "  who LIST               who is on a list you are on",
            "  subscribe LIST         join a list (also: join)",
            "  unsubscribe LIST       leave a list (also: leave)",
            "  confirm TOKEN          confirm a change the bot asked you to confirm",
            "  index LIST [N]         the last N posts of a list's archive (20 without N)",
            "  get LIST 12            archived posts as attachments (also: get LIST 10-15)",
            "  search LIST WORDS      archived posts whose subject or text has every word",
            "  digest LIST            one mail a day with the list's posts (nodigest LIST: each post)",
            "",
            "and these command lines, exactly as at the shell:",
            "",
        ]
        for words, command in _walk(self.group):
            if may_use(command, club, actor):
                usage = " ".join(command.collect_usage_pieces(click.Context(command)))
                lines.append(f"  {' '.join(words)} {usage}".rstrip())
                lines.append(f"      {command.get_short_help_str(80)}")
        lines += ["", "Add --help to a command line to see its options."]
        return "\n".join(lines)

    def _reply(self, conn: sqlite3.Connection, club: Club, talk: Conversation, now: float) -> str:
        for token, command, list_name in talk.tokens:
            conn.execute(
                "INSERT INTO confirmations (token, address, command, list_name, created, expires)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (token, address_key(talk.sender), command, list_name, now, now + CONFIRM_SECONDS),
            )
        conn.execute("INSERT INTO bot_replies (address, sent) VALUES (?, ?)", (address_key(talk.sender), now))
        reply = reports.notice(
            sender=club.site.bot_address,
            to=talk.sender,
            subject=f"Re: {talk.subject}" if talk.subject else "Your commands to the club's bot",
            text=reply_text(talk),
            message_id_domain=club.site.domain,
            in_reply_to=talk.message_id or None,
            auto_submitted="auto-replied",
        )
        for result in talk.results:
            for content in result.attachments:
                reply.add_attachment(email.message_from_bytes(content, policy=email.policy.default))
        if len(talk.tokens) == 1:  # a reply to this message confirms (confirmation_in_reply)
            del reply["Message-ID"]
            reply["Message-ID"] = f"<confirm-{talk.tokens[0][0]}@{club.site.domain}>"
        queue_id = queue.enqueue(
            conn,
            kind="reply",
            sender=club.site.bounce_address,
            recipients=[talk.sender],
            content=bytes(reply),
            now=now,
            subject=str(reply["Subject"]),
        )
        return f"reply {queue_id} ({len(talk.results)} commands)"


def may_use(command: click.Command, club: Club, actor: Actor) -> bool:
    """Whether the sender's audience (member, list owner, administrator) covers the command's mark."""
    audience = getattr(command, "mail_audience", None)
    if audience is None:
        return False
    if actor.is_admin:
        rank = 2
    elif actor.address and any(actor.owns(ml) for ml in club.lists.values()):
        rank = 1
    else:
        rank = 0
    return AUDIENCES.index(audience) <= rank


def translate(
    words: list[str], sender: str, implied_list: str | None, now: datetime, zone: ZoneInfo
) -> list[str]:
    """A mailed command as the CLI command line it stands for."""
    verb, args = words[0].lower(), words[1:]

    def the_list() -> list[str]:
        """The list named (and anything after it, for click to refuse), or the implied one."""
        if args:
            return args
        if implied_list:
            return [implied_list]
        raise ClublistError(f"'{verb}' needs a list name, e.g. '{verb} youth'")

    if verb == "lists":
        return ["list", "ls", *args]
    if verb == "info":
        return ["list", "show", *the_list()]
    if verb == "who":
        return ["member", "ls", "--list", *the_list()]
    if verb in ("subscribe", "join"):
        return ["member", "join", sender, *the_list()]
    if verb in ("unsubscribe", "leave"):
        return ["member", "leave", sender, *the_list()]
    if verb == "reminders":
        return ["remind", "ls", *args]
    if verb == "index":
        listed = the_list()
        last = listed[1:] if len(listed) > 1 else [str(INDEX_LENGTH)]
        return ["archive", "ls", listed[0], "--last", *last]
    if verb == "get":
        return ["archive", "get", *args]
    if verb == "search":
        if len(args) < 2:
            raise ClublistError("write it as: search youth camp tents")
        return ["archive", "ls", args[0], "--search", " ".join(args[1:])]
    if verb in ("digest", "nodigest"):
        listed = the_list()
        return ["member", "set", sender, "--list", *listed, "--digest" if verb == "digest" else "--no-digest"]
    if verb == "remind" and args and args[0] not in ("add", "ls", "rm"):
        return remind_line(args, now, zone)
    return [verb, *args]


def remind_line(args: list[str], now: datetime, zone: ZoneInfo) -> list[str]:
    """``remind LIST|EMAIL WHEN TEXT`` as ``remind add``: WHEN is the longest start of the rest
    that reads as a time ("2026-12-01 18:00", "tomorrow 18:00") or, after "every", a schedule."""
    from clublist.club.schedule import ScheduleError, parse_every, parse_when

    usage = "write it as: remind youth tomorrow 18:00 Bring shoes (or: remind youth every monday 18:00 ...)"
    if len(args) < 3:
        raise ClublistError(f"remind needs a list, a time and a text; {usage}")
    target, rest = args[0], args[1:]
    recurring = rest[0].lower() == "every"
    problem = ""
    for size in range(min(len(rest) - 1, 6), 0, -1):
        when, text = " ".join(rest[:size]), " ".join(rest[size:])
        try:
            schedule = parse_every(when) if recurring else None
            if not recurring:
                parse_when(when, now, zone)
        except ScheduleError as exc:
            problem = problem or str(exc)
            continue
        subject = text if len(text) <= 70 else text[:67] + "..."
        option = ["--every", schedule or when] if recurring else ["--at", when]
        return ["remind", "add", "--to", target, *option, "--subject", subject, "--text", text]
    raise ClublistError(f"{problem or 'no time found'}; {usage}")


def automatic_reason(message: Message, sender: str) -> str | None:
    """Why this message must get no reply (RFC 3834), or None."""
    local = sender.partition("@")[0].lower()
    if not sender:
        return "null sender"
    if dsn.is_auto_reply(message):
        return "an automatic reply"
    if local in _AUTOMATIC_LOCAL_PARTS or local.endswith(("-owner", "-request", "-bounces")):
        return f"automatic sender {sender}"
    auto = str(message.get("Auto-Submitted", "no")).split(";")[0].strip().lower()
    if auto != "no":
        return f"Auto-Submitted: {auto}"
    if str(message.get("Precedence", "")).strip().lower() in ("bulk", "list", "junk"):
        return "Precedence: " + str(message.get("Precedence")).strip()
    if message.get("List-Id") or message.get("X-Autoreply") or message.get("X-Autorespond"):
        return "list or auto-reply headers"
    return None


def command_lines(message: Message, *, read_subject: bool = True) -> tuple[list[str], int]:
    """The command lines of a message and how many more were ignored: the body's, else the
    Subject's when the body holds no command (and *read_subject*: not for a reply to a
    confirmation, whose Subject repeats the command asked about); quoted text is never read."""
    found = []
    for line in _body_lines(message):
        stripped = line.strip()
        if stripped.lower() in _STOP_WORDS or line.startswith("-- ") or _QUOTE_START.match(stripped):
            break
        if not stripped or stripped.startswith(">"):
            continue
        found.append(stripped)
    if read_subject and not any(_looks_like_command(line) for line in found):
        subject = _strip_reply_prefix(_one_line(str(message.get("Subject", ""))))
        if subject and _looks_like_command(subject):
            found.insert(0, subject)
    return found[:MAX_COMMANDS], max(0, len(found) - MAX_COMMANDS)


_CONFIRMATION_ID = re.compile(r"<confirm-([0-9a-f]{12})@")
# Where a reply's quoted original begins when the mail program does not mark it with ">".
_QUOTE_START = re.compile(
    r"(-{2,}\s*(original message|ursprüngliche nachricht|message d'origine)\s*-{2,}"
    r"|(on|am|le) .*(wrote|schrieb|a écrit)\s*:$)",
    re.IGNORECASE,
)


def confirmation_in_reply(in_reply_to: str, references: str) -> str | None:
    """The confirmation token of the bot's message this one replies to, if any."""
    found = _CONFIRMATION_ID.search(in_reply_to) or _CONFIRMATION_ID.search(references)
    return found[1] if found else None


def _looks_like_command(text: str) -> bool:
    first = text.split(maxsplit=1)[0].lower() if text.split() else ""
    return first in {
        "help",
        "lists",
        "info",
        "who",
        "subscribe",
        "join",
        "unsubscribe",
        "leave",
        "confirm",
        "remind",
        "reminders",
        "member",
        "list",
        "held",
        "queue",
        "status",
        "config",
        "bounces",
        "archive",
        "index",
        "get",
        "search",
        "digest",
        "nodigest",
    }


_REPLY_PREFIX = re.compile(r"^\s*(re|aw|fwd?|wg|sv|antw|tr)(\[\d+\])?\s*:\s*", re.IGNORECASE)


def _strip_reply_prefix(subject: str) -> str:
    while match := _REPLY_PREFIX.match(subject):
        subject = subject[match.end() :]
    return subject.strip()


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]


def _body_lines(message: Message) -> Iterator[str]:
    text = _body_text(message)[:MAX_TEXT]
    yield from text.splitlines()[: MAX_COMMANDS * 20]


def _body_text(message: Message) -> str:
    """The text of the message: text/plain preferred, HTML turned to text; never raises."""
    try:
        if isinstance(message, EmailMessage):
            part = message.get_body(("plain",)) or message.get_body(("html",))
        else:
            part = None
        if part is None:
            return ""
        try:
            text = part.get_content()
        except (LookupError, UnicodeError, AttributeError):
            payload = part.get_payload(decode=True)
            text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
        if part.get_content_subtype() == "html":
            text = html_to_text(text)
        return str(text)
    except Exception as exc:  # broken MIME: no commands rather than no reply
        log.info("bot: could not read a message body: %s", exc)
        return ""


_BLOCK_TAGS = frozenset({"p", "br", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote"})


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self.skip += 1
        if tag == "blockquote":
            self.parts.append("\n> ")
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self.skip:
            self.skip -= 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Enough of an HTML body to read command lines from (quoted parts stay quoted)."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return "".join(parser.parts)


def reply_text(talk: Conversation) -> str:
    blocks = []
    for result in talk.results:
        heading = f"> {result.line}\n" if result.line else ""
        blocks.append(heading + result.text)
    if talk.ignored:
        blocks.append(
            f"({talk.ignored} more lines were ignored: the bot reads {MAX_COMMANDS} commands a mail.)"
        )
    return "\n\n".join(blocks) + "\n"


def _walk(group: click.Group, words: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        if isinstance(command, click.Group):
            yield from _walk(command, (*words, name))
        elif command is not None:
            yield (*words, name), command


def _help_of(group: click.Group, argv: list[str]) -> str:
    words = [w for w in argv if w not in ("--help", "-h")]
    command: click.Command = group
    context = click.Context(group, info_name="clublist")
    for word in words:
        if not isinstance(command, click.Group):
            break
        sub = command.get_command(context, word)
        if sub is None:
            break
        command = sub
        context = click.Context(command, info_name=word, parent=context)
    return command.get_help(context)
