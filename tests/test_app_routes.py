"""`create_app` shows every route the server has: each router of app/ is included there."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from fastapi import APIRouter
from starlette.routing import BaseRoute

import app
from app.main import create_app
from app.settings import Settings


def routers_of_app_package() -> dict[str, APIRouter]:
    """Every module-level APIRouter defined in app/, by the module that defines it."""
    found: dict[str, APIRouter] = {}
    for module_info in pkgutil.walk_packages(app.__path__, "app."):
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if isinstance(value, APIRouter):
                found.setdefault(f"{module.__name__}.{name}", value)
    return found


def included(routes: list[BaseRoute]) -> list[APIRouter]:
    """The routers included into `routes`, however deep. FastAPI keeps each one behind an
    `_IncludedRouter` that names it as `original_router`."""
    out: list[APIRouter] = []
    for route in routes:
        router = getattr(route, "original_router", None)
        if isinstance(router, APIRouter):
            out += [router, *included(router.routes)]
    return out


def test_every_router_of_app_is_included_by_create_app(tmp_path: Path) -> None:
    server = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'v.sqlite'}"))
    mounted = {id(router) for router in included(server.routes)}
    routers = routers_of_app_package()
    # The doors the adapter runtime used to mount, named so that this test stays honest.
    assert {
        "app.devices.endpoints.router",
        "app.exports.endpoints.router",
        "app.adapters.ws_ingest.router",
        "app.adapters.endpoints.router",
    } <= set(routers)
    assert sorted(name for name, router in routers.items() if id(router) not in mounted) == []
