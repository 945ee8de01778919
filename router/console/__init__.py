"""The operator console: `webhook-router console`, its own process on its own port.

    settings   the [console] table (off unless configured)
    auth       users, password and token checks, roles, login throttling
    session    signed session cookies and the CSRF token bound to each
    app        the aiohttp app (wiring only); pages: its handlers; overview: what it reads
    sourcepages  Sources: mapping preview (everyone), Send test payload (operators)
"""
