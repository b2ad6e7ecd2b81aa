"""The pixelchat server: `create_app(settings)` (FastAPI), run by `pixelchat serve`."""
