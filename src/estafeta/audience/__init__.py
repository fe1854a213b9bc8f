"""Audiences: lists and contacts, consent (double opt-in), unsubscribe (one-click, mailto, page), the
preference center, and campaigns sent to a list or segment."""
