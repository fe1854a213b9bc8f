"""Dashboard pages, one module per area; each page parses its input, calls the core and renders."""
