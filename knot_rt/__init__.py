"""knot_rt: the Knot application API, station gateway and live actors."""

__version__ = "0.1.0"
