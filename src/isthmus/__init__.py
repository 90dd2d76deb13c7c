"""Isthmus: an IT/OT convergence platform.

Machines (OPC UA, Modbus TCP, ...) → pipeline (decode, qualify) → transport →
historian and live subscribers → API and control-tower UI.
"""

__version__ = "0.1.0"
