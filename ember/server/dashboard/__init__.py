"""The web dashboard: what the cluster does, behind a login with an Ember token, served on a port
of its own (an origin apart from web endpoints') at /dashboard/ (`/` redirects there).
sessions.py: who is logged in; views.py: the pages and their live event streams; render.py:
HTML, escaped; http.py: requests and answers."""

from .views import PREFIX, Dashboard

__all__ = ["PREFIX", "Dashboard"]
