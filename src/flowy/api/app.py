"""The ASGI application: ``create_app(settings)``."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from flowy import __version__
from flowy.api import errors
from flowy.api.console import router as console_router
from flowy.api.fast import FastRoutes
from flowy.api.feeds import RunFeeds
from flowy.api.limits import BodyLimit
from flowy.api.routes import router
from flowy.api.schemas import install_openapi
from flowy.api.webhooks import router as webhooks_router
from flowy.services.keys import KeyCache
from flowy.services.platform import Platform
from flowy.settings import Settings, load_settings


def create_app(settings: Settings | None = None, platform: Platform | None = None) -> FastAPI:
    """Build the HTTP API.  Workers start and stop with the application's lifespan."""
    settings = settings or load_settings()
    plat = platform or Platform.build(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        plat.start()
        # Everything loaded so far (frameworks, models, node catalog) lives as long as the
        # process: move it out of the collector's view, so a full collection - else
        # 100-200 ms over a few hundred thousand objects - walks only what requests make.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            plat.stop()

    app = FastAPI(
        title="Flowy",
        version=__version__,
        lifespan=lifespan,
        openapi_url="/v1/openapi.json",
        docs_url="/v1/docs",
        redoc_url=None,
    )
    app.state.platform = plat
    app.state.keys = KeyCache(plat.db)
    app.state.feeds = RunFeeds()
    errors.install(app)
    app.add_middleware(FastRoutes)  # inside the body limit (the last added is outermost)
    app.add_middleware(
        BodyLimit, default=settings.server.max_body_bytes, uploads=settings.media.max_bytes + 65536
    )
    app.include_router(router)
    app.include_router(webhooks_router)
    app.include_router(console_router)
    install_openapi(app, settings)
    return app
