"""Errors of the acquisition package that a user can fix."""


class AcquisitionError(RuntimeError):
    """Acquisition could not start or continue; the message names the problem and the fix."""


class SimConfigError(AcquisitionError, ValueError):
    """The simulated microscope's configuration is missing or malformed."""
