"""The ``bench`` command line (Typer). One module per verb; ``cloakbench.cli.app`` wires them."""
