"""Everything that touches files: opening and aligning rasters, reading windows, writing outputs."""
