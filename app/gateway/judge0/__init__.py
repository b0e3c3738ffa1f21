"""Judge0 CE compatible API: contract (constants), parse (requests), render (answers), routes."""

from app.gateway.judge0 import info  # noqa: F401  (registers its routes on bp)
from app.gateway.judge0.contract import error_body, shape
from app.gateway.judge0.render import callback_renderer
from app.gateway.judge0.routes import bp

__all__ = ["bp", "callback_renderer", "error_body", "shape"]
