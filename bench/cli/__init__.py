"""The ``bench`` command line (Typer). One module per verb; ``bench.cli.app`` wires them."""
