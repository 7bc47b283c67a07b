"""The ``ort`` training backend (ONNX Runtime on-device training): the one place that imports it.

``onnxruntime-training`` is deprecated upstream (1.19.2 was its last release) and has wheels for x86_64
Linux with Python 3.10-3.12 only, so it is an optional extra, ``layerfed[ort]``, pinned with the onnx
version it works with. Importing this package where it is missing raises
:class:`agent.errors.BackendUnavailableError` (exit code 69) naming the extra and the platforms; dropping
the backend later means deleting this package and its name in :mod:`agent.learning.backends`.

- :mod:`.graphs`: the torch modules that are exported (trained part with NT-Xent, frozen prefix);
- :mod:`.artifacts`: export, training-artifact generation, the fix-ups these versions need, the cache;
- :mod:`.backend`: the training loop, reading parameters back into an update, stop and resume.
"""

from __future__ import annotations

from agent.errors import BackendUnavailableError
from agent.learning.backends import ONNX_RUNTIME_BACKEND, unavailable_reason

_reason = unavailable_reason(ONNX_RUNTIME_BACKEND)
if _reason is not None:
    raise BackendUnavailableError(_reason)

from agent.learning.backends.onnx_runtime.backend import OnnxRuntimeBackend  # noqa: E402

__all__ = ["OnnxRuntimeBackend"]
