"""The application factory: one Quart app whose roles come from configuration."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

from hypercorn.typing import ASGIFramework
from quart import Quart

from app.broker import Broker
from app.config import Settings
from app.events import EventLog
from app.gateway import judge0, openapi, piston, piston_ws, playground, v1
from app.gateway.service import Gateway
from app.gateway.shed import FastShed
from app.languages import Registry
from app.metrics import Metrics
from app.web import body, errors, health, instrumentation
from app.web import server as web_server

log = logging.getLogger(__name__)
DRAIN_TIMEOUT_S = 30.0


def create_app(settings: Settings, registry: Registry | None = None, metrics: Metrics | None = None) -> Quart:
    """Build the app for ``settings.roles``; the broker and executor open in ``before_serving``."""
    app = Quart(__name__)
    app.config["BACKGROUND_TASK_SHUTDOWN_TIMEOUT"] = DRAIN_TIMEOUT_S
    registry = registry or Registry.load(settings.languages, image_tag=settings.image_tag)
    metrics = metrics or Metrics()
    role = "+".join(settings.roles)
    metrics.prime(registry.unit_keys(), [role])
    broker = Broker(settings, metrics, role, registry)
    app.extensions.update(
        {
            "runbox.settings": settings,
            "runbox.registry": registry,
            "runbox.metrics": metrics,
            "runbox.broker": broker,
        }
    )
    errors.register(app, {piston.bp.name: piston.shape, judge0.bp.name: judge0.shape})
    body.install(app, settings.max_body_kb * 1024, settings.body_timeout_s)
    web_server.cap_headers(app, settings.max_header_kb * 1024)
    instrumentation.register(app)
    app.register_blueprint(health.bp)
    events: EventLog | None = None
    if "gateway" in settings.roles:
        events = EventLog(settings, broker, metrics)
        service = Gateway(settings, registry, broker, events, metrics)
        service.callbacks.add_renderer("judge0", judge0.callback_renderer(registry))
        app.extensions["runbox.gateway"] = service
        app.register_blueprint(v1.bp)
        app.register_blueprint(playground.bp)
        app.register_blueprint(piston.bp)
        app.register_blueprint(piston_ws.bp)
        app.register_blueprint(judge0.bp)
        app.register_blueprint(openapi.bp)

    tasks: list[asyncio.Task[None]] = []
    if "gate" in settings.roles:
        from app.gate.proxy import Gate

        app.extensions["runbox.gate"] = Gate(settings, registry, metrics)

    @app.before_serving
    async def open_resources() -> None:
        async def connect() -> None:
            gate = app.extensions.get("runbox.gate")
            if gate is not None:  # the gate speaks to the engine only, never to RabbitMQ
                await gate.start()
                return
            await broker.connect()
            if "gateway" in settings.roles:
                for key in registry.unit_keys():
                    await broker.declare_jobs(key)
                service: Gateway = app.extensions["runbox.gateway"]
                await service.stdin.start()
                await service.callbacks.start()
            if "executor" in settings.roles:
                from app.executor.scheduler import Executor

                executor = Executor(settings, registry, broker, metrics)
                app.extensions["runbox.executor"] = executor
                await executor.start()

        async def start() -> None:
            try:
                await connect()
            except Exception:
                # A process that cannot do its job must not look alive: stop it, loudly.
                log.critical("startup failed; stopping", exc_info=True)
                os.kill(os.getpid(), signal.SIGTERM)

        tasks.append(asyncio.create_task(start(), name="runbox-start"))
        if events is not None:
            events.start()

    @app.after_serving
    async def close_resources() -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        executor = app.extensions.get("runbox.executor")
        if executor is not None:
            await executor.drain(DRAIN_TIMEOUT_S)
        gate = app.extensions.get("runbox.gate")
        if gate is not None:
            await gate.close()
        if events is not None:
            await events.stop()
        await broker.close()

    return app


def asgi_app(app: Quart) -> ASGIFramework:
    """``app`` as it is served: ``/healthz``, and submissions while the gateway sheds, answered ahead of it."""
    metrics: Metrics = app.extensions["runbox.metrics"]
    settings: Settings = app.extensions["runbox.settings"]
    served: ASGIFramework = app
    service: Gateway | None = app.extensions.get("runbox.gateway")
    if service is not None:
        submissions = {
            "/api/v1/jobs": errors.native_body,
            "/api/v2/execute": piston.error_body,
            "/submissions": judge0.error_body,
            "/submissions/batch": judge0.error_body,
        }
        served = FastShed(served, service.admission, metrics, submissions)
    return health.FastHealth(served, settings.roles, metrics)
