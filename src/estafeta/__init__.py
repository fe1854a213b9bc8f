"""Estafeta: a self-hosted platform for sending bulk and transactional email."""

__version__ = "0.1.0"
