"""The SMTP relay: authenticated submission (STARTTLS and implicit TLS) into the platform's queue."""

from estafeta.smtp.credentials import NewSmtpCredential, SmtpCredentials
from estafeta.smtp.server import SmtpPorts, SmtpRelay

__all__ = ["NewSmtpCredential", "SmtpCredentials", "SmtpPorts", "SmtpRelay"]
