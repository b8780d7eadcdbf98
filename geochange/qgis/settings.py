"""The provider's one setting: where the geochange command is."""

#: Settings > Options > Processing > Providers > geochange: the path of the geochange executable
EXECUTABLE_SETTING = "GEOCHANGE_EXECUTABLE"


def executable_setting():
    """The setting's value (empty: not set), when Processing's settings are available."""
    try:
        from processing.core.ProcessingConfig import ProcessingConfig
    except ImportError:
        return ""
    return ProcessingConfig.getSetting(EXECUTABLE_SETTING) or ""
