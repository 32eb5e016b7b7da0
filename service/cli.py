"""The `retro` console entry point: every command of `retro.cli` plus the service's own.

It lives in `service` so that the dependency direction holds (service -> retro -> index): the
model package never imports the service, yet one `retro` command serves, builds and trains.
"""

from retro.cli import app

__all__ = ["app"]
