"""Errors of the acquisition package that a user can fix."""


class AcquisitionError(RuntimeError):
    """Acquisition could not start or continue; the message names the problem and the fix."""


class SimConfigError(AcquisitionError, ValueError):
    """The simulated microscope's configuration is missing or malformed."""


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (pymmcore-plus puts file line and cause on separate lines)."""
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
