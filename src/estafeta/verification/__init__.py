"""Sending-domain verification: DNS records checked (`records`), states kept and re-checked (`service`)."""
