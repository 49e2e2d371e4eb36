"""The ``bench`` command line (Typer). One module per verb; ``cloakbench.bench.cli.app`` wires them."""
