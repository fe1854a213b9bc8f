"""Outbound delivery: MX resolution, SMTP connections to receivers, per-destination throttling."""
