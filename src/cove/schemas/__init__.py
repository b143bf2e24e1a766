"""Wire models of the Daytona-compatible API (pydantic only, no FastAPI)."""
