"""``python -m velocity`` runs the CLI."""

from velocity.cli import main

main()
