"""`webhook-router console`: the console in its own process, on its own port."""

from __future__ import annotations

import structlog
from aiohttp import web

from router.console.app import create_console_app
from router.logs import configure_logging
from router.settings import Settings


def serve_console(settings: Settings) -> int:
    """Serve the console until SIGINT or SIGTERM; 0 when stopped."""
    console = settings.console
    assert console is not None
    configure_logging(settings.logging.level, settings.logging.pii_fields)
    log = structlog.get_logger("console")
    log.info("console_listening", host=console.host, port=console.port,
             development=console.development)
    web.run_app(create_console_app(settings), host=console.host, port=console.port,
                print=None, access_log=None)
    return 0
