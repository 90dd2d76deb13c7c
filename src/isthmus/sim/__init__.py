"""Plant simulator / digital twin: a deterministic bottling line, utility pump and energy
meter (:mod:`isthmus.sim.model`, pure) served over real OPC UA and Modbus TCP servers
(:func:`isthmus.sim.runner.run_simulator`).  Node ids and the register map are data in
:mod:`isthmus.sim.addressspace`; see ``README.md`` beside this file.
"""

from isthmus.sim.model import DownReason, MachineState, PlantModel

__all__ = ["DownReason", "MachineState", "PlantModel"]
