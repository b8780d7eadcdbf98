"""The geochange Processing provider: algorithms Detect and Evaluate, and the setting that says where
the geochange command is."""

import os

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import DetectAlgorithm, EvaluateAlgorithm
from .settings import EXECUTABLE_SETTING


class GeochangeProvider(QgsProcessingProvider):
    def id(self):
        return "geochange"

    def name(self):
        return "geochange"

    def longName(self):  # noqa: N802 (QGIS's names)
        return "geochange: change detection between two dates of imagery"

    def icon(self):
        return QIcon(os.path.join(os.path.dirname(__file__), "icon.svg"))

    def load(self):
        try:
            from processing.core.ProcessingConfig import ProcessingConfig, Setting
        except ImportError:   # QGIS without the Processing plugin's Python: no settings page
            return super().load()
        ProcessingConfig.settingIcons[self.name()] = self.icon()
        ProcessingConfig.addSetting(Setting(
            self.name(), EXECUTABLE_SETTING,
            "Path of the geochange executable (empty: the one `geochange qgis-install` recorded, else geochange on PATH)",
            "", valuetype=Setting.FILE))
        ProcessingConfig.readSettings()
        return super().load()

    def unload(self):
        try:
            from processing.core.ProcessingConfig import ProcessingConfig
        except ImportError:
            return
        ProcessingConfig.removeSetting(EXECUTABLE_SETTING)

    def loadAlgorithms(self):  # noqa: N802
        self.addAlgorithm(DetectAlgorithm())
        self.addAlgorithm(EvaluateAlgorithm())
