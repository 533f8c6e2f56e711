"""What a Postfix on this machine has in force, read with its own tools.

``postconf -x NAME...`` gives main.cf values as Postfix uses them (defaults and ``$name``
expansions included), ``postconf -M`` each master.cf service on one line, and ``postmap -q``
what a lookup table answers (so a transport file edited without ``postmap`` shows up as
such).  ``-c DIR`` reads another configuration directory (a second instance, the tests'
private one); without it Postfix's own rule applies (``MAIL_CONFIG``, else /etc/postfix).
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from clublist.errors import ClublistError

TIMEOUT = 30


@dataclass(frozen=True)
class ServiceLine:
    """One master.cf service as ``postconf -M`` prints it."""

    name: str
    type: str
    command: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.name}/{self.type}"

    @classmethod
    def parse(cls, line: str) -> ServiceLine | None:
        words = line.split()
        if len(words) < 8:
            return None
        options: dict[str, str] = {}
        args = words[8:]
        for flag, value in itertools.pairwise(args):
            if flag == "-o" and "=" in value:
                name, _, setting = value.partition("=")
                options[name] = setting
        return cls(words[0], words[1], words[7], options)


@dataclass(frozen=True)
class Postfix:
    """How to run Postfix's tools on one configuration directory (None: Postfix's default)."""

    config_directory: str | None = None

    @staticmethod
    def installed() -> bool:
        return shutil.which("postconf") is not None

    @property
    def main_cf(self) -> Path:
        return Path(self.config_directory or self.default_directory()) / "main.cf"

    def default_directory(self) -> str:
        return self._run("postconf", "-dh", "config_directory", config=False).strip() or "/etc/postfix"

    def values(self, names: list[str]) -> dict[str, str]:
        """The values in force (expanded) of main.cf settings *names*."""
        out = self._run("postconf", "-x", *names)
        values = {}
        for line in out.splitlines():
            name, sep, value = line.partition(" = ")
            if sep:
                values[name.strip()] = value.strip()
            elif line.rstrip().endswith(" ="):
                values[line.rstrip()[:-2].strip()] = ""
        return values

    def services(self) -> dict[str, ServiceLine]:
        """master.cf's services by ``name/type``."""
        found = (ServiceLine.parse(line) for line in self._run("postconf", "-M").splitlines())
        return {s.key: s for s in found if s is not None}

    def lookup(self, table: str, key: str) -> str | None:
        """What lookup table *table* (``hash:/etc/postfix/transport``) answers for *key*, None if nothing.

        Raises ClublistError when the table cannot be read (``postmap`` never run on it)."""
        args = ["postmap", *self._config_option(), "-q", key, table]
        result = self._call(args)
        if result.returncode == 0:
            return result.stdout.strip()
        if result.returncode == 1 and not result.stderr.strip():
            return None
        raise ClublistError(" ".join(result.stderr.split()) or f"postmap -q {key} {table} failed")

    def _config_option(self) -> list[str]:
        return ["-c", self.config_directory] if self.config_directory else []

    def _run(self, *args: str, config: bool = True) -> str:
        command = [args[0], *(self._config_option() if config else []), *args[1:]]
        result = self._call(command)
        if result.returncode != 0:
            detail = " ".join(result.stderr.split()) or f"exit status {result.returncode}"
            raise ClublistError(f"{' '.join(command)} failed: {detail}")
        return result.stdout

    @staticmethod
    def _call(command: list[str]) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False)
        except FileNotFoundError:
            raise ClublistError(f"{command[0]} is not installed: is Postfix installed?") from None
        except subprocess.TimeoutExpired:
            raise ClublistError(f"{' '.join(command)} did not answer within {TIMEOUT} s") from None
