"""Ember: run Python functions in containers on machines you own.

    import ember

    app = ember.App("hello")

    @app.function()
    def square(x):
        return x * x

    @app.local_entrypoint()
    def main():
        print(square.remote(7))
"""

from . import exception
from .app import App
from .cls import Cls, enter, exit, method, parameter
from .dict import Dict
from .batching import batched
from .function import Function, FunctionCall
from .image import Image
from .queue import Queue
from .retries import Retries
from .schedule import Cron, Period
from .secret import Secret
from .volume import Volume
from .web import asgi_app, concurrent, fastapi_endpoint, web_server, wsgi_app

__all__ = ["App", "Cls", "Cron", "Dict", "Function", "FunctionCall", "Image", "Period", "Queue", "Retries", "Secret",
           "Volume", "asgi_app", "batched", "concurrent", "enter", "exception", "exit", "fastapi_endpoint", "method",
           "parameter", "web_server", "wsgi_app"]
__version__ = "0.1.0"
