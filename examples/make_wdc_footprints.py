"""Write the hand-digitised building footprints of the build-wdc example (examples/wdc_naip.yaml).

The buildings were digitised by eye from naip_2009.tif and naip_2020.tif themselves (5 m pixels,
red-green-blue shown at 14-16x with a pixel grid): every roof that stands out from its surroundings
over more than 2 x 2 pixels, drawn as the rectangle of whole pixels it covers on that year's own
grid. Objects of 2 x 2 pixels or less (vehicles, machinery, bins, small sheds: at 5 m they cannot
be told apart), tree rows and bare yards are left out. The scene is farmland with two farmsteads:
eight buildings each year; one long shed of 2009 (``n4``) is not there in 2020 (crops grow on its
ground) and one building (``n5``) is new in 2020. The rectangles below are the whole
record of the digitising; the GeoJSON files are written from them:

    python examples/make_wdc_footprints.py      # rewrites examples/buildings_naip_{2009,2020}.geojson

Rectangles are (first row, row after the last, first column, column after the last) in pixels of
the year's image; ``n1`` and ``n5`` touch the images' northern edge and may reach beyond it.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent

BUILDINGS = {
    2009: {
        "n1": ((0, 2, 523, 529), "north farmstead, white roof at the image's edge"),
        "n2": ((13, 15, 525, 530), "north farmstead, dark roof"),
        "n3": ((17, 21, 524, 528), "north farmstead, house"),
        "n4": ((50, 54, 522, 531), "long shed south of the farmstead; not there in 2020"),
        "s1": ((626, 630, 5, 15), "south-west farmstead, long white roof"),
        "s2": ((629, 633, 16, 20), "south-west farmstead, white roof"),
        "s3": ((639, 643, 21, 26), "south-west farmstead, red roof"),
        "s4": ((639, 642, 34, 37), "south-west farmstead, small red roof"),
    },
    2020: {
        "n1": ((0, 2, 524, 529), "north farmstead, white roof at the image's edge"),
        "n2": ((13, 15, 526, 531), "north farmstead, dark roof"),
        "n3": ((18, 21, 525, 529), "north farmstead, house"),
        "n5": ((0, 5, 545, 550), "north farmstead, new blue-white roof east of the yard"),
        "s1": ((626, 630, 5, 15), "south-west farmstead, long white roof"),
        "s2": ((630, 634, 16, 20), "south-west farmstead, white roof"),
        "s3": ((640, 643, 21, 26), "south-west farmstead, red roof"),
        "s4": ((639, 642, 35, 37), "south-west farmstead, small red roof"),
    },
}


def main(out_dir: Path = HERE) -> None:
    """Write ``buildings_naip_<year>.geojson`` into ``out_dir`` (the grids come from the images beside this file)."""
    import geopandas as gpd
    import rasterio
    import shapely

    for year, buildings in BUILDINGS.items():
        with rasterio.open(HERE / f"naip_{year}.tif") as ds:
            t, crs = ds.transform, ds.crs
        shapes = [shapely.box(t.c + c0 * t.a, t.f + r1 * t.e, t.c + c1 * t.a, t.f + r0 * t.e)
                  for (r0, r1, c0, c1), _ in buildings.values()]
        frame = gpd.GeoDataFrame({"id": list(buildings), "year": year, "what": [w for _, w in buildings.values()]},
                                 geometry=shapes, crs=crs)
        out = Path(out_dir) / f"buildings_naip_{year}.geojson"
        out.unlink(missing_ok=True)
        frame.to_file(out, driver="GeoJSON", engine="pyogrio", COORDINATE_PRECISION=2)
        print(f"{out.name}: {len(frame)} buildings")


if __name__ == "__main__":
    main()
