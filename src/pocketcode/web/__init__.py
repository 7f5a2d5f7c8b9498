"""The HTTP layer: a FastAPI app factory, thin routes over the services."""
