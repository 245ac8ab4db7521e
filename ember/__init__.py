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
from .function import Function, FunctionCall
from .image import Image
from .retries import Retries

__all__ = ["App", "Function", "FunctionCall", "Image", "Retries", "exception"]
__version__ = "0.1.0"
