"""The API's routers, one per resource (see :func:`stetho.serving.api.create_app`)."""
