"""Self-Net isotropic restoration of anisotropic volumes: fitted axial degradation + restoration network."""

from infer.isotropic.degradation import AxialDegradation, fit_degradation
from infer.isotropic.selfnet import IsotropicConfig, IsotropicModel, restore_volume, train_isotropic

__all__ = [
    "AxialDegradation",
    "IsotropicConfig",
    "IsotropicModel",
    "fit_degradation",
    "restore_volume",
    "train_isotropic",
]
