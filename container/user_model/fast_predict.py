"""`inplace_predict` minus its per-call overhead, for one-row serving latency.

- Type dispatch and JSON building in `Booster.inplace_predict` cost as much as the prediction itself for one
  row (~2x less latency here: 125 vs 250 us). This calls the C function `inplace_predict` calls itself.
- Without a DMatrix handle that C function makes a new proxy DMatrix per call, and with it a new XGBoost
  context, which reads the cgroup CPU quota files and compiles a device regex: ~60 us of a one-row call
  (strace shows the file reads on every call). One proxy per thread, reused, skips that (84 against 144 us
  per call here; the same predictions, held by a test).

xgboost is pinned, and `predict` falls back to the public API if this ever fails (a test checks they agree).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import numpy as np
import xgboost as xgb

FastPredict = Callable[[xgb.Booster, np.ndarray], np.ndarray]


def make() -> FastPredict | None:
    try:
        import ctypes

        from xgboost.core import _LIB, _check_call, c_bst_ulong
    except ImportError:
        return None
    args = json.dumps(
        {"type": 0, "training": False, "iteration_begin": 0, "iteration_end": 0,
         "missing": float("nan"), "strict_shape": False, "cache_id": 0}
    ).encode()  # fmt: skip

    local = threading.local()  # a proxy holds the last call's data: one per thread

    def proxy() -> ctypes.c_void_p:
        handle = getattr(local, "proxy", None)
        if handle is None:
            handle = ctypes.c_void_p()
            _check_call(_LIB.XGProxyDMatrixCreate(ctypes.byref(handle)))
            local.proxy = handle  # lives as long as the thread: one small object per serving thread
        return handle

    def fast(booster: xgb.Booster, features: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(features, dtype=np.float32)
        interface = b'{"data": [%d, true], "shape": [%d, %d], "typestr": "<f4", "version": 3}' % (
            x.ctypes.data,
            x.shape[0],
            x.shape[1],
        )
        preds = ctypes.POINTER(ctypes.c_float)()
        shape = ctypes.POINTER(c_bst_ulong)()
        dims = c_bst_ulong()
        _check_call(
            _LIB.XGBoosterPredictFromDense(
                booster.handle,
                interface,
                args,
                proxy(),
                ctypes.byref(shape),
                ctypes.byref(dims),
                ctypes.byref(preds),
            )
        )
        out_shape = [int(shape[i]) for i in range(dims.value)]
        size = int(np.prod(out_shape))
        # Copy out of XGBoost's thread-local buffer before the next call reuses it.
        return np.ctypeslib.as_array(preds, (size,)).copy().reshape(out_shape)

    return fast


fast_predict = make()


def predict(booster: xgb.Booster, features: np.ndarray) -> np.ndarray:
    if fast_predict is not None:
        try:
            return fast_predict(booster, features)
        except Exception:  # any surprise: the public API, same result
            pass
    return booster.inplace_predict(features, validate_features=False)
