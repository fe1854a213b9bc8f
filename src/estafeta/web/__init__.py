"""Server-rendered pages: the public pages of list mail (unsubscribe, preferences, subscription form)."""
