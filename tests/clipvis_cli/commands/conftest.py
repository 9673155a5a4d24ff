"""The fixtures the command tests share with the tests of the modules behind them (conftest fixtures are per folder):
`vis` from evaluation/conftest.py, `tiny_train_config` from train/conftest.py. test_train.py imports train/'s autouse
`_no_downloads` itself, so that it covers that module's tests only."""

from __future__ import annotations

from ..evaluation.conftest import vis  # noqa: F401
from ..train.conftest import tiny_train_config  # noqa: F401
