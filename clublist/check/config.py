"""The config check: every file of lists.d loads, and nothing in it quietly loses mail.

Bounds and references are the model's and the store's own rules (the same
that ``config set`` and the daemon's reload apply); this module only reports them.
"""

from __future__ import annotations

from clublist.check import Finding, Target

FIX_FILE = "edit the file at that line; until it loads, the daemon keeps the last version that did"


def run(target: Target) -> list[Finding]:
    if not target.store.directory.is_dir():
        return [
            Finding(
                "config.files",
                "fail",
                f"{target.store.directory} is not a directory",
                "run 'clublist init --domain YOUR.DOMAIN --admin YOU@YOUR.DOMAIN' or point --dir at lists.d",
            )
        ]
    problems = target.store.problems()
    findings = [Finding("config.files", "fail", problem, FIX_FILE) for problem in problems]
    if target.site is None and not problems:  # club.toml is missing altogether
        findings.append(
            Finding(
                "config.files",
                "fail",
                f"{target.store.path('club.toml')} does not exist",
                "run 'clublist init --domain YOUR.DOMAIN --admin YOU@YOUR.DOMAIN'",
            )
        )
    if findings:
        return findings
    assert target.club is not None
    files = len(list(target.store.directory.glob("*.toml")))
    findings.append(Finding("config.files", "ok", f"all {files} files in {target.store.directory} load"))
    findings += [Finding("config.settings", "warn", a.detail, a.fix) for a in target.club.warnings]
    if not target.club.warnings:
        findings.append(
            Finding(
                "config.settings",
                "ok",
                f"{len(target.club.lists)} lists, {len(target.club.members)} members; "
                "every list a member is on exists, settings within bounds",
            )
        )
    return findings
