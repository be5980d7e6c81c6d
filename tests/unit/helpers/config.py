"""`relay serve`'s settings from a command line and an environment, as the CLI builds them:
for the tests of each group of options."""

from __future__ import annotations

import argparse

from relay.config import SERVE_OPTIONS, Settings, add_options, settings_from


def settings(*argv: str, **environ: str) -> Settings:
    parser = argparse.ArgumentParser()
    add_options(parser, SERVE_OPTIONS)
    return settings_from(parser.parse_args(argv), SERVE_OPTIONS, environ)
