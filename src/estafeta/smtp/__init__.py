"""The SMTP relay: authenticated submission (STARTTLS and implicit TLS) into the platform's queue."""

from estafeta.smtp.credentials import NewSmtpCredential, SmtpCredentialVerifier, create_smtp_credential
from estafeta.smtp.server import SmtpPorts, SmtpRelay

__all__ = ["NewSmtpCredential", "SmtpCredentialVerifier", "SmtpPorts", "SmtpRelay", "create_smtp_credential"]
