"""The error for inputs isotropic restoration cannot use (shown to the user as one line, no traceback)."""


class IsotropicInputError(ValueError):
    """A volume, voxel size, axis order, model or output path that isotropic restoration cannot use."""
