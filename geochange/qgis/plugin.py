"""The QGIS plugin: registers the geochange Processing provider (also when QGIS runs headless)."""

from qgis.core import QgsApplication

from .provider import GeochangeProvider


class GeochangePlugin:
    def __init__(self, iface):
        self.iface = iface
        self.provider = None

    def initProcessing(self):  # noqa: N802 (QGIS's names)
        self.provider = GeochangeProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802
        self.initProcessing()

    def unload(self):
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
