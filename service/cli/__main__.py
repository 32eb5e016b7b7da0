"""`python -m service.cli ...`: the `retro` command run by a given interpreter (the demo recipe's way)."""

from service.cli import app

app(prog_name="retro")
