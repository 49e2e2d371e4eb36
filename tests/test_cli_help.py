"""Every verb's ``--help`` shows its help strings whole (#27).

With rich markup on, Typer read ``[compare]``, ``[set.NAME]``, ``cloakbench[ray]`` and the
``[default: …]`` notes written into help strings as style tags and dropped them. The test
renders each verb's help and checks that every bracketed fragment of every option's source
help text is there literally, and that an option without a default value says what happens
when it is not given.
"""

from __future__ import annotations

import re

import pytest
import typer.main
from typer.testing import CliRunner

from cloakbench.bench.cli.app import app

GROUP = typer.main.get_command(app)
VERBS = sorted(GROUP.commands)
#: Options whose absence needs no words: nothing to override, sweep, write or read.
NOTHING_BY_DEFAULT = {
    "--set",
    "--sweep",
    "--config",
    "--json",
    "--check",
    "--write-baseline",
    "--tolerance",
    "--inject-delay",
    "--profile",
    "--images",
    "paths",
}


def rendered(verb: str) -> str:
    result = CliRunner().invoke(app, [verb, "--help"], env={"COLUMNS": "100", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_every_verb_is_covered():
    assert {"compare", "report", "plot", "protect", "perf", "list", "models"} <= set(VERBS)


@pytest.mark.parametrize("verb", VERBS)
def test_bracketed_text_and_defaults_survive(verb):
    text = rendered(verb)
    command = GROUP.commands[verb]
    for param in command.params:
        source = " ".join((getattr(param, "help", None) or "").split())
        for fragment in re.findall(r"\[[^\]]*\]", source):
            assert fragment in text, f"bench {verb} --help lost {fragment!r} of {param.opts}"
        if param.name == "help" or getattr(param, "is_flag", False) or param.required:
            continue
        names = set(param.opts) | {param.name}
        if param.default is None and not names & NOTHING_BY_DEFAULT:
            assert "default" in source.lower(), f"bench {verb} {param.opts[0]}: say what happens when it is not given"


def test_the_strings_the_issue_found_missing():
    text = rendered("compare")
    for literal in ("[compare]", "[set.NAME]", "pip install 'cloakbench[ray]'", "[default: all]", "[default: sdedit]"):
        assert literal in text
    assert "( options and tables)" not in text
