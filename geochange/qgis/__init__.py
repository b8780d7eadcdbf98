"""geochange in QGIS: a Processing provider (algorithms Detect and Evaluate) and the plugin that registers it.

The folder is a QGIS plugin as it is (``metadata.txt``, ``classFactory``); ``geochange qgis-install``
copies it into a QGIS profile. Its code imports only QGIS and the standard library: the algorithms
run the ``geochange`` command of the environment where geochange is installed (``runner``), so QGIS's
own Python needs neither torch nor rasterio.
"""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    """QGIS's entry point for the plugin."""
    from .plugin import GeochangePlugin

    return GeochangePlugin(iface)
