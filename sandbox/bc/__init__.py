"""Business Central stand-in: API v2.0, the bcsync custom API, webhooks and `/_sandbox/` controls."""
