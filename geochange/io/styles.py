"""QGIS styles of the outputs, and what the change-type raster says about its classes.

QGIS opens ``<name>.tif`` with the style of ``<name>.qml`` beside it (its default style), so each
raster gets a sidecar: the probability as a ramp, transparent at 0 (nodata -1 is transparent as
nodata), the mask red where changed and transparent elsewhere, the change types as named classes.
The polygons are styled by ``type`` (categorised) when they have one, else with red outlines
(``changes.qml``, also the GeoPackage's default style: ``io.vectors``).

A GeoTIFF cannot hold class names: GDAL keeps them (``SetCategoryNames``) in a ``.aux.xml`` beside
the file, for GTiff and COG alike. The type raster therefore carries its colour table and a
``CLASSES`` band tag in the file, and its category names in ``change_type.tif.aux.xml``
(:func:`pam_categories`), written by geochange (atomically) rather than by GDAL.
"""

from __future__ import annotations

import colorsys
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

#: the mask's and the untyped polygons' red (ColorBrewer Set1's first colour, as in changes.qml)
RED = (228, 26, 28)
#: change types 1..9 (ColorBrewer Set1); more types get evenly spread hues
TYPE_COLOURS = [(228, 26, 28), (55, 126, 184), (77, 175, 74), (152, 78, 163), (255, 127, 0), (255, 217, 47),
                (166, 86, 40), (247, 129, 191), (0, 206, 209)]
#: the probability ramp (YlOrRd): (value, RGB, alpha); 0 is transparent, opaque from the threshold (0.5)
PROBABILITY_RAMP = [(0.0, (255, 255, 178), 0), (0.25, (254, 204, 92), 90), (0.5, (253, 141, 60), 255),
                    (0.75, (240, 59, 32), 255), (1.0, (189, 0, 38), 255)]


def style_path(output: str | Path) -> Path:
    """The sidecar QGIS loads with ``output`` as its default style: ``<name>.qml`` beside ``<name>.tif``."""
    return Path(output).with_suffix(".qml")


def type_colour(k: int) -> tuple[int, int, int]:
    """The colour of change type ``k`` (1-based), the same in the raster, its style and the polygons' style."""
    if k <= len(TYPE_COLOURS):
        return TYPE_COLOURS[k - 1]
    r, g, b = colorsys.hsv_to_rgb(((k - 1) * 0.618034) % 1.0, 0.75, 0.9)
    return round(r * 255), round(g * 255), round(b * 255)


def type_names(n_types: int) -> list[str]:
    """Category names of change_type.tif, by value: 0 unchanged, 1..K ``type k``."""
    return ["unchanged", *[f"type {k}" for k in range(1, n_types + 1)]]


def type_colormap(n_types: int) -> dict[int, tuple[int, int, int, int]]:
    """The colour table of change_type.tif (0 unchanged black: a GeoTIFF colour table has no alpha)."""
    return {0: (0, 0, 0, 0), **{k: (*type_colour(k), 255) for k in range(1, n_types + 1)}}


def pam_categories(names: list[str]) -> str:
    """A GDAL ``.aux.xml`` (PAM) giving band 1 the category ``names`` (by value from 0)."""
    cats = "".join(f"\n      <Category>{escape(n)}</Category>" for n in names)
    return (f"<PAMDataset>\n  <PAMRasterBand band=\"1\">\n    <CategoryNames>{cats}\n    </CategoryNames>\n"
            f"  </PAMRasterBand>\n</PAMDataset>\n")


# -- rasters ----------------------------------------------------------------------------------------

def probability_qml() -> str:
    """change_probability.tif: a ramp from transparent at 0 to dark red at 1, opaque from the threshold."""
    items = "".join(f"\n          <item value=\"{v}\" color=\"{_hex(rgb)}\" alpha=\"{a}\" label=\"{v:g}\"/>"
                    for v, rgb, a in PROBABILITY_RAMP)
    renderer = f"""<rasterrenderer type="singlebandpseudocolor" band="1" opacity="1" alphaBand="-1" nodataColor="" classificationMin="0" classificationMax="1">
      {_MINMAX}
      <rastershader>
        <colorrampshader colorRampType="INTERPOLATED" classificationMode="1" clip="0" minimumValue="0" maximumValue="1" labelPrecision="2">{items}
        </colorrampshader>
      </rastershader>
    </rasterrenderer>"""
    return _raster_qml(renderer, resampling="bilinear")


def mask_qml() -> str:
    """change_mask.tif: changed (1) red, unchanged (0) transparent; nodata (255) is transparent as nodata."""
    return _raster_qml(_paletted([(0, (0, 0, 0), 0, "unchanged"), (1, RED, 255, "changed")]))


def type_qml(n_types: int) -> str:
    """change_type.tif: one named colour per type, unchanged (0) transparent."""
    entries = [(0, (0, 0, 0), 0, "unchanged")]
    entries += [(k, type_colour(k), 255, name) for k, name in enumerate(type_names(n_types)[1:], start=1)]
    return _raster_qml(_paletted(entries))


_MINMAX = """<minMaxOrigin>
        <limits>None</limits>
        <extent>WholeRaster</extent>
        <statAccuracy>Estimated</statAccuracy>
        <cumulativeCutLower>0.02</cumulativeCutLower>
        <cumulativeCutUpper>0.98</cumulativeCutUpper>
        <stdDevFactor>2</stdDevFactor>
      </minMaxOrigin>"""


def _paletted(entries: list[tuple[int, tuple[int, int, int], int, str]]) -> str:
    palette = "".join(f"\n        <paletteEntry value=\"{v}\" color=\"{_hex(rgb)}\" alpha=\"{a}\" label={quoteattr(label)}/>"
                      for v, rgb, a, label in entries)
    return f"""<rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">
      {_MINMAX}
      <colorPalette>{palette}
      </colorPalette>
    </rasterrenderer>"""


def _raster_qml(renderer: str, resampling: str = "nearestNeighbour") -> str:
    # zoomed in: classes keep their pixel edges; the probability is smoothed (bilinear)
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22.0" styleCategories="Symbology">
  <pipe>
    <provider>
      <resampling enabled="false" zoomedInResamplingMethod="{resampling}" zoomedOutResamplingMethod="nearestNeighbour" maxOversampling="2"/>
    </provider>
    {renderer}
    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>
    <huesaturation saturation="0" grayscaleMode="0" colorizeOn="0" colorizeRed="255" colorizeGreen="128" colorizeBlue="128" colorizeStrength="100" invertColors="0"/>
    <rasterresampler maxOversampling="2"/>
    <resamplingStage>resamplingFilter</resamplingStage>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
"""


# -- polygons -----------------------------------------------------------------------------------------

def polygons_qml(n_types: int, untyped: str) -> str:
    """The polygons' style: ``untyped`` (red outlines) without types, else categorised by ``type``."""
    if not n_types:
        return untyped
    cats = "".join(f"\n      <category symbol=\"{k - 1}\" value=\"{k}\" label=\"type {k}\" render=\"true\"/>"
                   for k in range(1, n_types + 1))
    symbols = "".join(_fill_symbol(str(k - 1), type_colour(k)) for k in range(1, n_types + 1))
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22.0" styleCategories="Symbology|Labeling">
  <renderer-v2 type="categorizedSymbol" attr="type" symbollevels="0" enableorderby="0" forceraster="0">
    <categories>{cats}
    </categories>
    <symbols>{symbols}
    </symbols>
    <rotation/>
    <sizescale/>
  </renderer-v2>
  <blendMode>0</blendMode>
  <featureBlendMode>0</featureBlendMode>
  <layerGeometryType>2</layerGeometryType>
</qgis>
"""


def _fill_symbol(name: str, rgb: tuple[int, int, int]) -> str:
    """A fill as changes.qml's: a faint fill (alpha 40) and a 0.6 mm outline of ``rgb``."""
    fill, outline = f"{rgb[0]},{rgb[1]},{rgb[2]},40", f"{rgb[0]},{rgb[1]},{rgb[2]},255"
    props = [("color", fill), ("style", "solid"), ("outline_color", outline), ("outline_style", "solid"),
             ("outline_width", "0.6"), ("outline_width_unit", "MM"), ("joinstyle", "miter")]
    options = "".join(f"\n            <Option type=\"QString\" name=\"{k}\" value=\"{v}\"/>" for k, v in props)
    legacy = "".join(f"\n          <prop k=\"{k}\" v=\"{v}\"/>" for k, v in props)
    return f"""
      <symbol type="fill" name="{name}" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleFill" enabled="1" locked="0" pass="0">
          <Option type="Map">{options}
          </Option>{legacy}
        </layer>
      </symbol>"""


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)
