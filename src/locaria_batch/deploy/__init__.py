"""Deployment: the docker registry (docker/dockers.json), images, stacks and the configure menu."""
