"""A headless QGIS session, run by tests/test_qgis.py under QGIS's own Python (not pytest's).

Loads the plugin the way QGIS does from the folder ``geochange qgis-install`` filled, runs its
algorithms through Processing, and writes what it saw as JSON: ``python3 qgis_session.py CONFIG.json``.
"""

import json
import os
import shutil
import sys
import traceback

cfg = json.loads(open(sys.argv[1], encoding="utf-8").read())
sys.path.insert(0, cfg["qgis_plugins"])     # QGIS's own plugins: processing

from qgis.core import (QgsApplication, QgsFeature, QgsProcessingContext, QgsProcessingException,  # noqa: E402
                       QgsProcessingFeedback, QgsProject, QgsRasterLayer, QgsVectorLayer)

app = QgsApplication([], False, cfg["profile"])
app.initQgis()

from processing.core.Processing import Processing  # noqa: E402

Processing.initialize()
import processing  # noqa: E402
import qgis.utils  # noqa: E402

report = {}


class Feedback(QgsProcessingFeedback):
    """Records what an algorithm reports; ``cancel_at_start``: cancels as soon as the command is shown."""

    def __init__(self, cancel_at_start=False):
        super().__init__()
        self.cancel_at_start = cancel_at_start
        self.log = {"progress": [], "texts": [], "commands": [], "infos": [], "console": [], "warnings": []}

    def setProgress(self, progress):  # noqa: N802
        self.log["progress"].append(progress)
        super().setProgress(progress)

    def setProgressText(self, text):  # noqa: N802
        self.log["texts"].append(text)
        super().setProgressText(text)

    def pushCommandInfo(self, text):  # noqa: N802
        self.log["commands"].append(text)
        super().pushCommandInfo(text)
        if self.cancel_at_start:
            self.cancel()

    def pushInfo(self, text):  # noqa: N802
        self.log["infos"].append(text)
        super().pushInfo(text)

    def pushConsoleInfo(self, text):  # noqa: N802
        self.log["console"].append(text)
        super().pushConsoleInfo(text)

    def pushWarning(self, text):  # noqa: N802
        self.log["warnings"].append(text)
        super().pushWarning(text)


def describe(layer):
    """A layer as the test checks it: validity, source, renderer and its classes."""
    d = {"name": layer.name(), "source": layer.source(), "valid": layer.isValid()}
    renderer = layer.renderer()
    d["renderer"] = renderer.type() if renderer else None
    if d["renderer"] == "paletted":
        d["classes"] = [[int(c.value), c.label, c.color.alpha()] for c in renderer.classes()]
    elif d["renderer"] == "singlebandpseudocolor":
        items = renderer.shader().rasterShaderFunction().colorRampItemList()
        d["ramp"] = [[i.value, i.color.alpha()] for i in items]
    elif d["renderer"] == "categorizedSymbol":
        d["attr"] = renderer.classAttribute()
        d["categories"] = [[str(c.value()), c.label()] for c in renderer.categories()]
    return d


def run(name, params, feedback, load=False):
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    try:
        run_alg = processing.runAndLoadResults if load else processing.run
        results = run_alg(name, params, feedback=feedback, context=context)
        out = {"results": {k: (v if isinstance(v, (int, float, type(None))) else str(v)) for k, v in results.items()}}
    except QgsProcessingException as exc:
        out = {"error": str(exc)}
    out["log"] = feedback.log
    return out


try:
    # 1. the plugin, as QGIS finds and starts it in a profile's plugin folder
    sys.path.insert(0, cfg["plugins"])
    qgis.utils.plugin_paths = [cfg["plugins"]]
    qgis.utils.updateAvailablePlugins()
    report["available"] = "geochange_qgis" in qgis.utils.available_plugins
    report["started"] = bool(qgis.utils.loadPlugin("geochange_qgis") and qgis.utils.startProcessingPlugin("geochange_qgis"))
    provider = QgsApplication.processingRegistry().providerById("geochange")
    report["algorithms"] = sorted(a.id() for a in provider.algorithms()) if provider else []
    from processing.core.ProcessingConfig import ProcessingConfig

    # the provider's setting (Settings > Options > Processing > Providers) comes first
    report["setting"] = ProcessingConfig.getSetting("GEOCHANGE_EXECUTABLE")
    ProcessingConfig.setSettingValue("GEOCHANGE_EXECUTABLE", cfg["fake_geochange"])
    report["other_geochange"] = run("geochange:detect", {"BEFORE": cfg["before"], "AFTER": cfg["after"],
                                                     "OUTPUT": cfg["cancel_out"]}, Feedback())
    ProcessingConfig.setSettingValue("GEOCHANGE_EXECUTABLE", "")

    # 2. Detect, loaded into the project as from the toolbox
    report["detect"] = run("geochange:detect", {"BEFORE": cfg["before"], "AFTER": cfg["after"], "MIN_AREA": 20,
                                                "EXTRA": "--tile 64 --overlap 16", "OUTPUT": cfg["out"]}, Feedback(), load=True)
    report["project_layers"] = [describe(l) for l in QgsProject.instance().mapLayers().values()]
    report["tree_order"] = [l.name() for l in QgsProject.instance().layerTreeRoot().findLayers()]

    # 3. the outputs opened as files (drag and drop): their sidecar styles come with them
    report["opened"] = {n: describe(QgsRasterLayer(os.path.join(cfg["out"], n), n))
                        for n in ("change_probability.tif", "change_mask.tif")}

    # 4. marks drawn in QGIS (a scratch layer, field "changed"): exported and given to geochange
    src = QgsVectorLayer(cfg["marks"], "marks", "ogr")
    drawn = QgsVectorLayer(f"Polygon?crs={src.crs().authid()}&field=changed:integer", "drawn marks", "memory")
    features = []
    for f in src.getFeatures():
        g = QgsFeature(drawn.fields())
        g.setGeometry(f.geometry())
        g["changed"] = f["change"]
        features.append(g)
    drawn.dataProvider().addFeatures(features)
    QgsProject.instance().addMapLayer(drawn)
    report["marks_drawn"] = drawn.featureCount()
    report["marks"] = run("geochange:detect", {
        "BEFORE": cfg["marks_before"], "AFTER": cfg["marks_after"], "MODEL": 5, "LABELS": drawn.id(),
        "LABEL_FIELD": "changed", "LOAD": False, "OUTPUT": cfg["marks_out"],
        "EXTRA": "--tile 96 --overlap 16 -p epochs=1 -p warmup_epochs=1 -p recluster_every=1 -p marks_negatives=8 "
                 "-p cluster_points=4096"}, Feedback())

    # 5. cancel as soon as it starts; a refused run (outputs already there) is one clear error
    report["canceled"] = run("geochange:detect", {"BEFORE": cfg["before"], "AFTER": cfg["after"],
                                                  "OUTPUT": cfg["cancel_out"]}, Feedback(cancel_at_start=True))
    report["refused"] = run("geochange:detect", {"BEFORE": cfg["before"], "AFTER": cfg["after"], "LOAD": False,
                                                 "OUTPUT": cfg["out"]}, Feedback())

    # 6. Evaluate the mask against the planted truth
    report["evaluate"] = run("geochange:evaluate", {"PRED": os.path.join(cfg["out"], "change_mask.tif"),
                                                    "TRUTH": cfg["truth"], "OUTPUT": cfg["scores"]}, Feedback())

    # 7. a typed run's outputs (written by the test): named classes, from the sidecar and from the
    # GeoTIFF's colour table + GDAL category names alone (no .qml beside it)
    typed = cfg["typed"]
    report["typed"] = {"change_type": describe(QgsRasterLayer(os.path.join(typed, "change_type.tif"), "t")),
                       "gpkg": describe(QgsVectorLayer(os.path.join(typed, "changes.gpkg") + "|layername=changes", "g", "ogr")),
                       "shp": describe(QgsVectorLayer(os.path.join(typed, "changes.shp"), "s", "ogr"))}
    bare = cfg["bare"]
    os.makedirs(bare, exist_ok=True)
    for name in ("change_type.tif", "change_type.tif.aux.xml"):
        shutil.copy(os.path.join(typed, name), os.path.join(bare, name))
    report["typed"]["no_qml"] = describe(QgsRasterLayer(os.path.join(bare, "change_type.tif"), "bare"))
except Exception:
    report["exception"] = traceback.format_exc()

with open(cfg["report"], "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1)
QgsProject.instance().clear()
app.exitQgis()
