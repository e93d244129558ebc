"""Flowy: node-graph workflows run as apps over an asynchronous REST API."""

__version__ = "0.1.0"
