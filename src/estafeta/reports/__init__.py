"""Reports the platform sends and receives: TLS-RPT aggregate reports out, DMARC aggregate reports in."""
