"""Sender-guideline compliance: the message linter and the IDN restriction profile (UTS #39)."""
