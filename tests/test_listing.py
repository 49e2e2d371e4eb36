"""``bench list`` and ``bench models`` at 80 columns: plain sentences first, nothing cut, nothing squeezed."""

from __future__ import annotations

import re

from rich.cells import cell_len
from typer.testing import CliRunner

from cloakbench.bench.cli.app import app
from cloakbench.bench.cli.listing import first_paragraph


def flat(text: str) -> str:
    """Table cells read as running text: borders dropped, wrapped lines joined."""
    return " ".join(re.sub(r"[│┃┏┓┗┛┡┩└┘━─┳┻╇╈┼├┤┬┴]", " ", text).split())


def run(*args):
    result = CliRunner().invoke(app, list(args), terminal_width=80)
    assert result.exit_code == 0, result.output
    assert all(cell_len(line) <= 80 for line in result.output.splitlines())  # display cells, not code points
    return result.output


def test_every_protection_has_a_plain_sentence_first_and_the_maths_only_when_verbose():
    from cloakbench.protections import PROTECTIONS

    plain = flat(run("list", "protections"))
    verbose = flat(run("list", "protections", "--verbose"))
    for name, cls in PROTECTIONS.items():
        assert cls.plain and cls.plain != cls.description(), name
        assert flat(cls.plain) in plain, name  # whole: never cut
        assert flat(cls.description()) not in plain, name
        assert flat(f"{cls.plain} {cls.description()}") in verbose, name


def test_model_descriptions_are_whole_paragraphs():
    from cloakbench.core.zoo import ZOO

    text = flat(run("list", "models"))
    for name, entry in ZOO.items():
        described = first_paragraph(entry.description)
        assert described.endswith((".", ")")), (name, described)
        assert flat(described) in text, name
    assert "the second model of transfer experiments" in text  # toy-b was cut after "the"


def test_bench_models_fits_80_columns_without_squeezing_names():
    from cloakbench.core import weights

    output = run("models")
    for status in weights.status():
        assert any(line.startswith(status.spec.name + " ") for line in output.splitlines()), status.spec.name
