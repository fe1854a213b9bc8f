"""Dashboard pages, one module per area; each page parses its input, calls the platform and renders."""
