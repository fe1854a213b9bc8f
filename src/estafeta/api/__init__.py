"""The HTTP API (FastAPI): one router per resource; the OpenAPI document is the contract."""
