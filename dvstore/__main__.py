"""``python -m dvstore`` runs the ``dvs`` command."""

from dvstore.cli import run

run()
