"""Ember's runtime inside a container: loads the user's function and serves its inputs."""
