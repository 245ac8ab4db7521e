"""Web endpoint routing: which function serves each URL label now, and a function's URLs.

A label is served by the function that took it last: a new version of a deployed app takes
over its previous version's, a newer run of an ephemeral app (`ember serve`) its earlier run's.
Labels of a workspace other than `main` start with its name and "--" (as Modal's URLs start
with the workspace's), and a label held by one workspace is never taken over by another.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .auth import MAIN

if TYPE_CHECKING:
    from .apps import FunctionState


class WebRoutes:
    def __init__(self):
        # URL label -> the function serving it, and which of a class's methods ("" for a function)
        self._routes: dict[str, tuple[FunctionState, str]] = {}
        self.base_url = ""  # the gateway's URL, set when it starts
        self.dashboard_url = ""  # the dashboard's (an origin of its own), where the gateway's / sends browsers

    def route(self, fn: FunctionState):
        """Serve a function's web endpoints at their labels, taking them over from any earlier app."""
        if fn.serves_web and not fn.definition.bound_params:
            for label, endpoint in web_endpoints(fn).items():
                holder = self._routes.get(label)
                if holder is None or holder[0].app.workspace == fn.app.workspace:
                    self._routes[label] = (fn, endpoint)

    def unroute(self, fn: FunctionState):
        """Stop serving a function's endpoints (those no newer app took over)."""
        if fn.serves_web:
            for label, endpoint in web_endpoints(fn).items():
                if self._routes.get(label) == (fn, endpoint):
                    del self._routes[label]

    def lookup(self, label: str) -> tuple[FunctionState | None, str]:
        """The running function that serves a label, and which of its class's methods."""
        fn, endpoint = self._routes.get(label, (None, ""))
        return (fn, endpoint) if fn is not None and fn.app.running else (None, "")

    def urls(self, fn: FunctionState) -> dict[str, str]:
        """Where its endpoints are served: "" for a function's own, else by class method."""
        if not fn.serves_web:
            return {}
        return {endpoint: f"{self.base_url}/{label}" for label, endpoint in web_endpoints(fn).items()}


def web_endpoints(fn: FunctionState) -> dict[str, str]:
    """A function's web endpoints by their name in URLs (the label given, or APP-FUNCTION,
    APP-CLASS-METHOD; "-dev" for an app that is not deployed, as Modal does): which class
    method serves each ("" for a function's own)."""
    d, app = fn.definition, fn.app
    endpoints = {"": d.web} if d.web.kind else {}
    endpoints.update(d.web_methods)
    labels = {}
    for method, web in endpoints.items():
        name = f"{fn.name}-{method}" if method else fn.name
        label = web.label or (f"{app.name}-{name}" if app.name else name)
        label = re.sub(r"[^a-z0-9-]+", "-", label.lower()).strip("-")
        label = label if app.deployed else f"{label}-dev"
        labels[label if app.workspace == MAIN else f"{app.workspace}--{label}"] = method
    return labels
