"""The provider's algorithms: Detect and Evaluate, each one run of the geochange command (``runner``).

Detect loads its outputs into the project when done (``QgsProcessingContext.addLayerToLoadOnCompletion``),
each with its style (the ``.qml`` beside it), stacked polygons over mask over types over probability.
"""

import json
import os
import shlex
import time

from qgis.core import (QgsLayerTreeLayer, QgsProcessing, QgsProcessingAlgorithm, QgsProcessingContext,
                       QgsProcessingException, QgsProcessingLayerPostProcessorInterface, QgsProcessingOutputFile,
                       QgsProcessingOutputNumber, QgsProcessingOutputRasterLayer, QgsProcessingOutputVectorLayer,
                       QgsProcessingParameterBoolean, QgsProcessingParameterDefinition, QgsProcessingParameterEnum,
                       QgsProcessingParameterFeatureSource, QgsProcessingParameterField, QgsProcessingParameterFile,
                       QgsProcessingParameterFileDestination, QgsProcessingParameterFolderDestination,
                       QgsProcessingParameterMapLayer, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterLayer, QgsProcessingParameterString, QgsProcessingUtils, QgsProject,
                       QgsProviderRegistry)

from . import runner
from .settings import executable_setting

#: ``--model`` choices; the first: geochange's default (cva, or logistic with marks)
MODELS = ["", "cva", "drlnet", "vae", "rscvae", "cdcluster", "logistic"]
#: Detect's layers, top to bottom in the layer tree: (output, file, layer name, style beside it)
LAYERS = [("CHANGES", "changes.gpkg", "changes", "changes.qml"),
          ("CHANGE_MASK", "change_mask.tif", "change mask", "change_mask.qml"),
          ("CHANGE_TYPE", "change_type.tif", "change type", "change_type.qml"),
          ("CHANGE_PROBABILITY", "change_probability.tif", "change probability", "change_probability.qml")]
SCORES = ["accuracy", "precision", "recall", "f1", "kappa", "iou", "miou", "specificity"]
#: post-processors must outlive the algorithm object that made them (QGIS keeps no reference)
_POST_PROCESSORS = []


class GeochangeAlgorithm(QgsProcessingAlgorithm):
    """What both algorithms share: running ``geochange <args>`` with QGIS's feedback."""

    def createInstance(self):  # noqa: N802 (QGIS's names)
        return type(self)()

    def run_geochange(self, args, feedback, echo_stdout=True):
        """Run geochange with ``args``; progress and lines into ``feedback``; the RunResult, or an exception."""
        try:
            command = runner.find_geochange(executable_setting()) + list(args)
        except runner.GeochangeNotFound as exc:
            raise QgsProcessingException(str(exc))
        feedback.pushCommandInfo(" ".join(shlex.quote(a) for a in command))
        feedback.setProgressText(f"geochange {args[0]}: started")
        feedback.setProgress(0)
        last = {"label": None}

        def on_line(stream, text):
            if not text.strip():
                return
            if stream == "stdout":
                if echo_stdout:
                    feedback.pushInfo(text)
                return
            if text.startswith("warning:"):
                feedback.pushWarning(text[len("warning:"):].strip())
                return
            progress = runner.progress_of(text)
            if progress is None:
                feedback.pushConsoleInfo(text)
                return
            feedback.setProgress(min(progress, 99.0))
            label = text.split(":")[0] if ":" in text else text
            if label != last["label"]:
                last["label"] = label
                feedback.setProgressText(label)
                feedback.pushConsoleInfo(text)

        t0 = time.monotonic()
        try:
            result = runner.run(command, on_line, feedback.isCanceled)
        except OSError as exc:
            raise QgsProcessingException(f"cannot run {command[0]}: {exc}")
        if result.canceled:
            feedback.pushInfo(f"geochange {args[0]}: canceled; no output was left half-written")
            return result
        if not result.ok:
            raise QgsProcessingException(f"geochange {args[0]} failed: {result.error or f'exit status {result.returncode}'}")
        feedback.setProgress(100)
        feedback.pushInfo(f"geochange {args[0]}: finished in {time.monotonic() - t0:.1f} s")
        return result


class DetectAlgorithm(GeochangeAlgorithm):
    def name(self):
        return "detect"

    def displayName(self):  # noqa: N802
        return "Detect change"

    def shortHelpString(self):  # noqa: N802
        return ("Change between two dates of georeferenced imagery (any GDAL rasters; AFTER is warped onto "
                "BEFORE's grid): change_probability.tif, change_mask.tif (and change_type.tif for typed models), "
                "changes.gpkg / changes.shp, quicklook.png and summary.json in the output folder, opened styled. "
                "With marks (polygons or points with a field change = 1 or 0, drawn on the scene) the model learns "
                "from them. Runs the geochange command (Settings > Options > Processing > Providers > geochange).")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("BEFORE", "Earlier image (BEFORE): outputs use its grid and CRS"))
        self.addParameter(QgsProcessingParameterRasterLayer("AFTER", "Later image (AFTER)"))
        self.addParameter(QgsProcessingParameterEnum(
            "MODEL", "Model", options=["default (cva; logistic with marks)", *MODELS[1:]], defaultValue=0))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "LABELS", "Marks: polygons or points with a field change = 1 (changed) or 0 (unchanged)",
            [QgsProcessing.TypeVectorPolygon, QgsProcessing.TypeVectorPoint], optional=True))
        self.addParameter(QgsProcessingParameterField(
            "LABEL_FIELD", "Field of the marks (1 changed, 0 unchanged)", defaultValue="change",
            parentLayerParameterName="LABELS", optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "MIN_AREA", "Minimum mapping unit (m²); empty: automatic (9 pixels, at least 10 m²)",
            QgsProcessingParameterNumber.Double, defaultValue=None, optional=True, minValue=0))
        self.addParameter(QgsProcessingParameterBoolean(
            "OVERWRITE", "Replace the outputs of an earlier run in the output folder", defaultValue=False))
        self.addParameter(QgsProcessingParameterBoolean(
            "LOAD", "Open the outputs in the project when done", defaultValue=True))
        checkpoint = QgsProcessingParameterFile("CHECKPOINT", "Trained model (a checkpoint of geochange train, last.pt)",
                                                extension="pt", optional=True)
        extra = QgsProcessingParameterString("EXTRA", "More geochange detect options, e.g. --tile 1024 --device cuda",
                                             optional=True)
        for advanced in (checkpoint, extra):
            advanced.setFlags(advanced.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(advanced)
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "Output folder"))
        self.addOutput(QgsProcessingOutputRasterLayer("CHANGE_PROBABILITY", "Change probability"))
        self.addOutput(QgsProcessingOutputRasterLayer("CHANGE_MASK", "Change mask"))
        self.addOutput(QgsProcessingOutputRasterLayer("CHANGE_TYPE", "Change type (typed models)"))
        self.addOutput(QgsProcessingOutputVectorLayer("CHANGES", "Change polygons", QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputFile("SUMMARY", "Summary (summary.json)"))
        self.addOutput(QgsProcessingOutputNumber("CHANGED_AREA_M2", "Changed area (m²)"))
        self.addOutput(QgsProcessingOutputNumber("POLYGONS", "Change polygons (count)"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        folder = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        args = ["detect", raster_path(self, parameters, "BEFORE", context),
                raster_path(self, parameters, "AFTER", context), "--out", folder]
        model = MODELS[self.parameterAsEnum(parameters, "MODEL", context)]
        if model:
            args += ["--model", model]
        checkpoint = self.parameterAsFile(parameters, "CHECKPOINT", context)
        if checkpoint:
            args += ["--checkpoint", checkpoint]
        if parameters.get("LABELS") not in (None, ""):
            path, layer = self.parameterAsCompatibleSourceLayerPathAndLayerName(
                parameters, "LABELS", context, ["gpkg", "shp", "geojson"], "gpkg", feedback)
            args += ["--labels", path] + (["--label-layer", layer] if layer else [])
            field = self.parameterAsString(parameters, "LABEL_FIELD", context)
            if field:
                args += ["--label-field", field]
        if parameters.get("MIN_AREA") not in (None, ""):
            args += ["--min-area", repr(self.parameterAsDouble(parameters, "MIN_AREA", context))]
        if self.parameterAsBoolean(parameters, "OVERWRITE", context):
            args.append("--overwrite")
        args += shlex.split(self.parameterAsString(parameters, "EXTRA", context) or "")
        result = self.run_geochange(args, feedback)
        if result.canceled:
            return {}
        summary_path = os.path.join(folder, "summary.json")
        with open(summary_path, encoding="utf-8") as f:
            summary = json.load(f)
        results = {"OUTPUT": folder, "SUMMARY": summary_path, "CHANGED_AREA_M2": summary.get("changed_area_m2"),
                   "POLYGONS": summary.get("polygons")}
        loaded = {}   # rank in the stack -> layer id, shared by this run's post-processors
        for rank, (key, name, title, style) in enumerate(LAYERS):
            path = os.path.join(folder, name)
            if not os.path.isfile(path):
                results[key] = None
                continue
            source = f"{path}|layername=changes" if name.endswith(".gpkg") else path
            results[key] = source
            if self.parameterAsBoolean(parameters, "LOAD", context):
                hint = QgsProcessingUtils.LayerHint.Vector if key == "CHANGES" else QgsProcessingUtils.LayerHint.Raster
                details = QgsProcessingContext.LayerDetails(title, context.project(), key, hint)
                post = StyledOutput(os.path.join(folder, style), rank, loaded)
                _POST_PROCESSORS.append(post)
                details.setPostProcessor(post)
                context.addLayerToLoadOnCompletion(source, details)
        del _POST_PROCESSORS[:-64]
        return results


class StyledOutput(QgsProcessingLayerPostProcessorInterface):
    """Gives a loaded output its style (the .qml beside it) and its place in the layer tree."""

    def __init__(self, style, rank, loaded):
        super().__init__()
        self.style, self.rank, self.loaded = style, rank, loaded

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802
        if os.path.isfile(self.style):
            message, ok = layer.loadNamedStyle(self.style)
            if not ok:
                feedback.pushWarning(f"{self.style}: {message}")
            layer.triggerRepaint()
        self.loaded[self.rank] = layer.id()
        project = layer.project() if hasattr(layer, "project") and layer.project() else context.project()
        stack_layers(project or QgsProject.instance(), [self.loaded[r] for r in sorted(self.loaded)])


def stack_layers(project, layer_ids):
    """Put the layers ``layer_ids`` (top first) one above the other where the topmost of them is, when
    they share a group of the layer tree."""
    nodes = [project.layerTreeRoot().findLayer(i) for i in layer_ids]
    if len(nodes) < 2 or None in nodes or len({id(n.parent()) for n in nodes}) != 1:
        return
    parent = nodes[0].parent()
    ids = set(layer_ids)
    start = min(k for k, c in enumerate(parent.children()) if isinstance(c, QgsLayerTreeLayer) and c.layerId() in ids)
    clones = [n.clone() for n in nodes]
    for n in nodes:
        parent.removeChildNode(n)
    for k, clone in enumerate(clones):
        parent.insertChildNode(start + k, clone)


class EvaluateAlgorithm(GeochangeAlgorithm):
    def name(self):
        return "evaluate"

    def displayName(self):  # noqa: N802
        return "Evaluate a change mask"

    def shortHelpString(self):  # noqa: N802
        return ("Pixel scores of a change mask (uint8: 1 changed, 0 unchanged, 255 nodata) against ground truth, a "
                "raster (brought onto the mask's grid; values > 0 changed unless given) or a polygon layer: accuracy, "
                "precision, recall, F1, kappa, IoU, mIoU, specificity. Runs `geochange evaluate --json`.")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("PRED", "Change mask to score"))
        self.addParameter(QgsProcessingParameterMapLayer("TRUTH", "Ground truth: a raster or a polygon layer"))
        self.addParameter(QgsProcessingParameterString(
            "CHANGE_VALUES", "Truth raster values meaning changed, e.g. 2 or 1,2 (empty: any value > 0)", optional=True))
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT", "Scores (JSON)", "JSON files (*.json)", optional=True, createByDefault=False))
        for key in SCORES:
            self.addOutput(QgsProcessingOutputNumber(key.upper(), key))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        truth, layer = layer_path(self.parameterAsLayer(parameters, "TRUTH", context), "TRUTH")
        args = ["evaluate", raster_path(self, parameters, "PRED", context), truth, "--json"]
        if layer:
            args += ["--truth-layer", layer]
        values = self.parameterAsString(parameters, "CHANGE_VALUES", context)
        if values:
            args += ["--change-values", values]
        result = self.run_geochange(args, feedback, echo_stdout=False)
        if result.canceled:
            return {}
        try:
            report = json.loads(result.stdout)
        except ValueError:
            raise QgsProcessingException(f"geochange evaluate printed no scores: {result.stdout[:200]!r}")
        scores = report["scores"]
        for key in SCORES:
            feedback.pushInfo(f"{key}: {scores[key]:.4f}")
        results = {key.upper(): scores[key] for key in SCORES}
        out = self.parameterAsFileOutput(parameters, "OUTPUT", context) if parameters.get("OUTPUT") else ""
        if out:
            with open(out, "w", encoding="utf-8") as f:
                json.dump(report, f, indent=2)
            results["OUTPUT"] = out
        return results


def raster_path(alg, parameters, name, context):
    """The GDAL path of a raster parameter (a file, a /vsi path or a GDAL connection string)."""
    layer = alg.parameterAsRasterLayer(parameters, name, context)
    if layer is None:
        raise QgsProcessingException(f"{name}: no raster given")
    return layer_path(layer, name)[0]


def layer_path(layer, name):
    """(path, layer name or '') of a GDAL raster or an OGR vector layer: what geochange can open."""
    if layer is None:
        raise QgsProcessingException(f"{name}: no layer given")
    provider = layer.providerType()
    if provider == "gdal":
        return layer.source(), ""
    if provider == "ogr":
        parts = QgsProviderRegistry.instance().decodeUri("ogr", layer.source())
        return parts.get("path") or layer.source(), parts.get("layerName") or ""
    raise QgsProcessingException(f"{name}: {layer.name()} is a {provider} layer; geochange reads files "
                                 "(save it as a GeoTIFF or GeoPackage first)")
