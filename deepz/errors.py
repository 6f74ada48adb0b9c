"""The failures a user can fix (bad config, model, device, disk): shown as one paragraph, not a traceback."""

from __future__ import annotations

from acquire.errors import AcquisitionError
from deepz.cluster.connect import ClusterError
from deepz.config import ConfigError
from infer.data import StackFileError
from infer.device import DeviceError
from infer.engine import EngineError
from infer.isotropic.errors import IsotropicInputError
from infer.model_io import ModelFileError
from storage.records import RecordingError, WriterError
from wire.curve import CurveKeyError
from wire.messages import MessageError

USER_ERRORS: tuple[type[BaseException], ...] = (
    AcquisitionError,
    ClusterError,
    ConfigError,
    CurveKeyError,
    DeviceError,
    EngineError,
    IsotropicInputError,
    MessageError,
    ModelFileError,
    RecordingError,
    StackFileError,  # also PairFileError (super-resolution pairs)
    WriterError,
    OSError,  # what the user's machine refused: a port in use, a full disk, a missing or read-only path
)
