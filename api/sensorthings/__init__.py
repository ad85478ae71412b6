"""The OGC SensorThings API 1.1 read view of the warehouse (``/sta/v1.1``)."""

from api.sensorthings.routes import PREFIX, router

__all__ = ["PREFIX", "router"]
