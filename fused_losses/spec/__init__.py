"""One declarative spec per loss (see ``_base.py``); ``SPECS`` lists them all."""
from . import asl, dice, dsc, focal_bce, ghmc, softmax_focal

SPECS = tuple(m.SPEC for m in (focal_bce, ghmc, asl, dice, softmax_focal, dsc))
BY_STEM = {s.stem: s for s in SPECS}

__all__ = ["SPECS", "BY_STEM"]
