"""geochange: change detection between two dates of georeferenced imagery."""

__version__ = "0.1.0"
