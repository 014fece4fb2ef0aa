"""Every `tagger ...` command shown in the README and docs/ is a valid command line today: its options exist,
its values pass their checks, and the options it passes to Beam are real Beam pipeline options."""
from __future__ import annotations

import glob
import os
import re
import shlex

import pytest

from jobs.beam_options import check_beam_args
from jobs.cli import active_parser, build_parser
from jobs.common_args import option_strings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBCOMMANDS = ("train", "tag", "models", "feedback", "stream", "scheduled", "demo", "review")
SHELL_FENCES = ("```sh", "```bash", "```cron", "```ini", "```")


def _shell_blocks(text: str) -> list[str]:
    """The bodies of fenced blocks that hold commands (sh, bash, cron, systemd units, or no language)."""
    blocks, current = [], None
    for line in text.splitlines():
        if line.startswith("```"):
            if current is None:
                current = [] if line.strip() in SHELL_FENCES else False
            else:
                if current is not False:
                    blocks.append("\n".join(current))
                current = None
        elif current:
            current.append(line)
        elif current == []:
            current = [line]
    return blocks


def documented_commands() -> list[tuple[str, str]]:
    found = []
    for path in [os.path.join(ROOT, "README.md"), *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))]:
        with open(path) as fh:
            text = fh.read()
        for block in _shell_blocks(text):
            for line in block.replace("\\\n", " ").splitlines():
                if line.lstrip().startswith("#"):
                    continue
                for match in re.finditer(r"(?<![\w-])tagger\s+(?=(\S.*)$)", line):
                    command = re.split(r"\s(?:\|\||&&|#|\|)\s", match.group(1))[0]
                    command = re.sub(r"\s\[[^\]]*(\]|$)", "", command)  # [--optional ...] placeholders
                    if command.split()[0] in SUBCOMMANDS or command.startswith("-"):
                        found.append((os.path.relpath(path, ROOT), command))
                        break
    return found


_PLACEHOLDER = re.compile(r"'[A-Z][A-Z_:]*'")  # HOST:PORT, PATH, DIR in synopsis lines


@pytest.mark.parametrize("where, command", documented_commands(), ids=lambda v: v[:60])
def test_documented_command_parses(where, command, capsys):
    argv = shlex.split(command)
    try:
        if argv[0] == "scheduled":
            from jobs.scheduled import build_parser as scheduled_parser

            scheduled_parser().parse_args(argv[1:])
            return
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
    except SystemExit:
        err = capsys.readouterr().err
        # Paths of the example's machine need not exist here; anything else is a broken example.
        assert "does not exist" in err or _PLACEHOLDER.search(err), f"{where}: {command}: {err}"
        return
    if extra:
        assert getattr(args, "beam_options", False), f"{where}: {command}: unknown {extra}"
        check_beam_args(extra, option_strings(active_parser(parser, args)))


def test_the_quick_start_is_documented_and_checked():
    commands = [c for w, c in documented_commands() if w == "README.md"]
    assert any(c.startswith("demo --data-only") for c in commands)
    assert any(c.startswith("models promote tagger@v2") for c in commands)
