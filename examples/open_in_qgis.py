"""Load detect's outputs the way QGIS does, headless, and print what a user would see.

Run with the Python that ships with QGIS (e.g. Debian's python3-qgis):

    QT_QPA_PLATFORM=offscreen python3 examples/open_in_qgis.py naip_change/
"""

import sys

from qgis.core import QgsApplication, QgsRasterLayer, QgsVectorLayer


def main(folder: str) -> None:
    app = QgsApplication([], False)
    app.initQgis()
    for uri in (f"{folder}/changes.gpkg|layername=changes", f"{folder}/changes.shp"):
        layer = QgsVectorLayer(uri, "changes", "ogr")
        _, styled = layer.loadDefaultStyle()
        outline = layer.renderer().symbol().symbolLayer(0).strokeColor().name()
        print(f"{uri}: valid={layer.isValid()} crs={layer.crs().authid()} features={layer.featureCount()} "
              f"default style={styled} outline={outline}")
    for name in ("change_probability.tif", "change_mask.tif", "change_type.tif"):
        layer = QgsRasterLayer(f"{folder}/{name}", name)
        if layer.isValid():
            print(f"{name}: crs={layer.crs().authid()} nodata={layer.dataProvider().sourceNoDataValue(1)}")
    app.exitQgis()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "naip_change")
