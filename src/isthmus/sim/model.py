"""The plant's process model: a bottling line, a utility pump and an energy meter.

Pure: no I/O, no wall clock.  Time comes from the caller through :meth:`PlantModel.step`,
randomness from generators seeded by the constructor, so a seed and a sequence of steps
always give the same values (the protocol servers in :mod:`isthmus.sim.runner` only
publish what this model computes).

The bottling line is four stations in series, each with an accumulation buffer in front
of the next one::

    supply → filler → [b1] → capper → [b2] → labeller → [b3] → conveyor → case packer

Downstream stations run a little faster than upstream ones (the usual "V-curve"), so
buffers stay low in normal production.  A station with an empty buffer in front of it
and a stopped upstream station is *starved*; one with a full buffer behind it and a
stopped downstream station is *blocked*.  Random faults (mean time between failures of
a few minutes) stop a station for a random repair time with a reason code.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import IntEnum

SignalValue = float | int | bool


class MachineState(IntEnum):
    IDLE = 0
    RUNNING = 1
    STARVED = 2
    BLOCKED = 3
    DOWN = 4


class DownReason(IntEnum):
    """Why a machine is down (0 when it is not)."""

    NONE = 0
    JAM = 101
    MOTOR_OVERLOAD = 102
    MATERIAL_SHORTAGE = 103
    SENSOR_FAULT = 104
    SAFETY_STOP = 105
    # pump
    PUMP_OVERLOAD_TRIP = 201
    PUMP_HIGH_VIBRATION_TRIP = 202
    PUMP_DRY_RUNNING = 203


@dataclass(frozen=True)
class FaultMode:
    reason: DownReason
    weight: float
    repair_min_s: float
    repair_max_s: float


@dataclass(frozen=True)
class FaultProfile:
    mtbf_s: float
    modes: tuple[FaultMode, ...]


# Limits of the writable setpoints: values written outside are clamped.
LINE_SPEED_LIMITS = (0.0, 600.0)  # bottles/min
FILL_VOLUME_LIMITS = (250.0, 1000.0)  # ml
PUMP_SPEED_LIMITS = (0.0, 100.0)  # %

LINE_SPEED_MAX = LINE_SPEED_LIMITS[1]
BUFFER_CAPACITY = 60  # bottles between two stations
AMBIENT_C = 24.0

FILL_SIGMA_ML = 2.0
FILL_TOLERANCE_ML = 5.0  # |fill - setpoint| beyond this is rejected (~1.2 %)
CAP_TORQUE_NM = 2.0
CAP_TORQUE_SIGMA = 0.05
CAP_TORQUE_TOLERANCE = 0.13  # ~0.9 % rejects
CONVEYOR_PITCH_M = 0.1  # belt length per bottle

# Pump: centrifugal, pump curve H = H0*n^2 - K*Q^2, system curve H = HS + C*Q^2
# (H in m, Q in m3/h, n = speed fraction).  Rated point 100 m3/h at 40 m.
PUMP_H0 = 50.0
PUMP_K = 0.001
PUMP_HS = 15.0
PUMP_C = 0.0025
PUMP_RATED_RPM = 1480.0
PUMP_RAMP = 10.0  # %/s (drive ramp)
PUMP_VIBRATION_TRIP = 11.0  # mm/s (ISO 10816 zone D)
PUMP_VIBRATION_WARNING = 7.1  # mm/s (zone C)
PUMP_WEAR_RATE = 0.5 / 3600.0  # mm/s of vibration added per running hour at full speed
RHO_G = 998.0 * 9.81
MAINS_V = 400.0
MAINS_HZ = 50.0


@dataclass
class Setpoints:
    line_speed: float = 300.0  # bottles/min
    fill_volume: float = 500.0  # ml
    pump_speed: float = 75.0  # %
    pump_enable: bool = True


@dataclass
class Station:
    """One machine of the bottling line."""

    name: str
    overspeed: float  # nominal speed = line setpoint * overspeed
    kw_idle: float
    kw_full: float
    profile: FaultProfile
    reject_rate: float = 0.0
    state: MachineState = MachineState.IDLE
    reason: DownReason = DownReason.NONE
    speed: float = 0.0  # bottles/min
    total: int = 0
    good: int = 0
    reject: int = 0
    progress: float = 0.0  # fraction of the next bottle
    repair_left: float = 0.0


@dataclass
class Pump:
    speed: float = 0.0  # % of rated
    flow: float = 0.0  # m3/h
    head: float = 0.0  # m
    power_kw: float = 0.0  # electrical
    current: float = 0.0  # A
    wear: float = 0.0  # mm/s of extra vibration from bearing wear
    bearing_temp: float = AMBIENT_C
    fault: DownReason = DownReason.NONE
    repair_left: float = 0.0
    run_seconds: float = 0.0
    volume_m3: float = 0.0


@dataclass
class EnergyMeter:
    kw: float = 0.0
    kvar: float = 0.0
    power_factor: float = 1.0
    kwh: float = 0.0


def _profile(mtbf_s: float, *modes: tuple[DownReason, float, float, float]) -> FaultProfile:
    return FaultProfile(mtbf_s, tuple(FaultMode(*m) for m in modes))


def default_stations() -> list[Station]:
    return [
        Station(
            "filler",
            overspeed=1.0,
            kw_idle=3.0,
            kw_full=9.0,
            profile=_profile(
                300.0,
                (DownReason.JAM, 5, 15, 60),
                (DownReason.MATERIAL_SHORTAGE, 2, 30, 120),
                (DownReason.SENSOR_FAULT, 1, 20, 90),
                (DownReason.SAFETY_STOP, 1, 10, 40),
            ),
        ),
        Station(
            "capper",
            overspeed=1.05,
            kw_idle=1.5,
            kw_full=4.5,
            profile=_profile(
                360.0,
                (DownReason.JAM, 5, 15, 45),
                (DownReason.MOTOR_OVERLOAD, 2, 60, 180),
                (DownReason.MATERIAL_SHORTAGE, 2, 30, 90),
            ),
        ),
        Station(
            "labeller",
            overspeed=1.10,
            kw_idle=1.5,
            kw_full=3.0,
            reject_rate=0.004,
            profile=_profile(
                240.0,
                (DownReason.JAM, 6, 10, 45),
                (DownReason.MATERIAL_SHORTAGE, 3, 30, 90),
                (DownReason.SENSOR_FAULT, 1, 20, 60),
            ),
        ),
        Station(
            "conveyor",
            overspeed=1.15,
            kw_idle=0.8,
            kw_full=3.2,
            reject_rate=0.0005,
            profile=_profile(
                600.0,
                (DownReason.JAM, 4, 10, 40),
                (DownReason.MOTOR_OVERLOAD, 1, 60, 150),
                (DownReason.SAFETY_STOP, 2, 10, 30),
            ),
        ),
    ]


PUMP_FAULTS = _profile(
    1800.0,
    (DownReason.PUMP_OVERLOAD_TRIP, 2, 60, 180),
    (DownReason.PUMP_DRY_RUNNING, 1, 60, 120),
)


def _ramp(current: float, target: float, up: float, down: float, dt: float) -> float:
    if target > current:
        return min(target, current + up * dt)
    return max(target, current - down * dt)


def _clamp(value: float, limits: tuple[float, float]) -> float:
    return min(max(value, limits[0]), limits[1])


@dataclass
class _Thermal:
    """First-order temperatures and the labeller's bang-bang glue heater."""

    product: float = 6.0  # filler product temperature (chilled beverage)
    capper_motor: float = AMBIENT_C
    glue: float = 150.0
    glue_heating: bool = True


class PlantModel:
    """The whole plant.  ``PlantModel(seed).step(dt)`` advances it by ``dt`` seconds.

    ``faults=False`` disables random faults (tests inject them with
    :meth:`inject_fault`); everything else stays seeded and deterministic.
    """

    def __init__(self, seed: int = 42, *, faults: bool = True) -> None:
        self.seed = seed
        self.faults = faults
        self._rng = random.Random(seed)  # events: faults, repairs
        self._noise = random.Random(seed * 7919 + 1)  # process variation and sensor noise
        self.time = 0.0
        self.setpoints = Setpoints()
        self.stations = default_stations()
        self.buffers = [BUFFER_CAPACITY // 2] * (len(self.stations) - 1)
        self.pump = Pump()
        self.energy = EnergyMeter()
        self.thermal = _Thermal()
        self.fill_bias = 0.0
        self.last_fill = self.setpoints.fill_volume
        self.last_torque = CAP_TORQUE_NM
        self._values: dict[str, SignalValue] = {}
        self._warm_start()
        self._refresh_values()

    def _warm_start(self) -> None:
        """Start in steady production: machines at speed, pump at its operating point."""
        for st in self.stations:
            st.state = MachineState.RUNNING
            st.speed = self.setpoints.line_speed * st.overspeed
        self.thermal.capper_motor = (
            AMBIENT_C + 38.0 * (self.station("capper").speed / LINE_SPEED_MAX) ** 1.5
        )
        self.thermal.glue = 160.0
        p = self.pump
        p.speed = self.setpoints.pump_speed
        n = p.speed / 100.0
        p.flow = math.sqrt(max(PUMP_H0 * n * n - PUMP_HS, 0.0) / (PUMP_K + PUMP_C))
        p.bearing_temp = AMBIENT_C + 22.0 * n * n
        self._pump(0.0)
        self._energy(0.0)

    # -- inputs ---------------------------------------------------------------------------

    def station(self, name: str) -> Station:
        for st in self.stations:
            if st.name == name:
                return st
        raise KeyError(f"no machine {name!r}; known: {[s.name for s in self.stations]}")

    def write_setpoint(self, name: str, value: float) -> float:
        """Apply a setpoint (``line_speed``, ``fill_volume``, ``pump_speed``,
        ``pump_enable``); returns the value applied after clamping to its limits."""
        sp = self.setpoints
        if name == "pump_enable":
            sp.pump_enable = bool(value)
            return float(sp.pump_enable)
        if not math.isfinite(value):
            raise ValueError(f"setpoint {name} must be a finite number, not {value!r}")
        if name == "line_speed":
            sp.line_speed = _clamp(value, LINE_SPEED_LIMITS)
            return sp.line_speed
        if name == "fill_volume":
            sp.fill_volume = _clamp(value, FILL_VOLUME_LIMITS)
            return sp.fill_volume
        if name == "pump_speed":
            sp.pump_speed = _clamp(value, PUMP_SPEED_LIMITS)
            return sp.pump_speed
        raise KeyError(f"unknown setpoint {name!r}")

    def inject_fault(self, machine: str, reason: DownReason, duration_s: float) -> None:
        """Stop a machine (or ``pump``) for ``duration_s`` seconds with ``reason``."""
        if machine == "pump":
            self.pump.fault = reason
            self.pump.repair_left = duration_s
            return
        st = self.station(machine)
        st.reason = reason
        st.repair_left = duration_s
        st.state = MachineState.DOWN

    # -- time -----------------------------------------------------------------------------

    def step(self, dt: float) -> None:
        """Advance the plant by ``dt`` seconds (non-positive ``dt`` does nothing)."""
        if not dt > 0.0:
            return
        self.time += dt
        for st in self.stations:
            self._station_faults(st, dt)
        self._update_states()
        self._update_speeds(dt)
        # Downstream first: a station frees buffer space before its upstream fills it.
        for i in reversed(range(len(self.stations))):
            self._produce(i, dt)
        self._thermal(dt)
        self._pump(dt)
        self._energy(dt)
        self._refresh_values()

    def _station_faults(self, st: Station, dt: float) -> None:
        if st.repair_left > 0.0:
            st.repair_left -= dt
            if st.repair_left <= 0.0:
                st.repair_left = 0.0
                st.reason = DownReason.NONE
            return
        running = self.faults and st.state == MachineState.RUNNING
        if running and self._rng.random() < dt / st.profile.mtbf_s:
            st.reason, st.repair_left = self._draw_fault(st.profile)

    def _draw_fault(self, profile: FaultProfile) -> tuple[DownReason, float]:
        modes = profile.modes
        mode = self._rng.choices(modes, weights=[m.weight for m in modes])[0]
        return mode.reason, self._rng.uniform(mode.repair_min_s, mode.repair_max_s)

    def _update_states(self) -> None:
        last = len(self.stations) - 1
        old = [st.state for st in self.stations]
        line_on = self.setpoints.line_speed >= 1.0
        for i, st in enumerate(self.stations):
            if st.repair_left > 0.0:
                st.state = MachineState.DOWN
            elif not line_on:
                st.state = MachineState.IDLE
            elif i > 0 and self.buffers[i - 1] < 1 and old[i - 1] != MachineState.RUNNING:
                st.state = MachineState.STARVED
            elif (
                i < last
                and self.buffers[i] >= BUFFER_CAPACITY
                and old[i + 1] != MachineState.RUNNING
            ):
                st.state = MachineState.BLOCKED
            else:
                st.state = MachineState.RUNNING

    def _update_speeds(self, dt: float) -> None:
        last = len(self.stations) - 1
        line = self.setpoints.line_speed
        for i, st in enumerate(self.stations):
            if st.state == MachineState.RUNNING:
                target = min(line * st.overspeed, LINE_SPEED_MAX * 1.2)
                # Low buffer in front of a running upstream station: follow its pace
                # instead of emptying the buffer.  (A stopped one: drain the buffer.)
                up = self.stations[i - 1] if i > 0 else None
                if (
                    up is not None
                    and up.state == MachineState.RUNNING
                    and self.buffers[i - 1] < BUFFER_CAPACITY // 5
                ):
                    target = min(target, max(up.speed, 1.0))
                # Buffer behind nearly full and the downstream station running slower:
                # slow to its pace.  (A stopped one: fill the buffer, then be blocked.)
                down = self.stations[i + 1] if i < last else None
                if (
                    down is not None
                    and down.state == MachineState.RUNNING
                    and self.buffers[i] > BUFFER_CAPACITY * 4 // 5
                ):
                    target = min(target, max(down.speed, 1.0))
                st.speed = _ramp(st.speed, target, 60.0, 120.0, dt)
            elif st.state == MachineState.DOWN:
                st.speed = _ramp(st.speed, 0.0, 0.0, 600.0, dt)
            else:
                st.speed = _ramp(st.speed, 0.0, 0.0, 200.0, dt)

    def _produce(self, i: int, dt: float) -> None:
        st = self.stations[i]
        if st.state != MachineState.RUNNING:
            st.progress = 0.0
            return
        capacity = st.progress + st.speed / 60.0 * dt
        n = int(capacity)
        if i > 0:
            n = min(n, self.buffers[i - 1])
        if i < len(self.stations) - 1:
            n = min(n, BUFFER_CAPACITY - self.buffers[i])
        n = max(n, 0)
        st.progress = min(capacity - n, 1.0)
        good = 0
        for _ in range(n):
            if self._bottle_ok(st):
                good += 1
        st.total += n
        st.good += good
        st.reject += n - good
        if i > 0:
            self.buffers[i - 1] -= n
        if i < len(self.stations) - 1:
            self.buffers[i] += good

    def _bottle_ok(self, st: Station) -> bool:
        noise = self._noise
        if st.name == "filler":
            target = self.setpoints.fill_volume
            self.last_fill = noise.gauss(target + self.fill_bias, FILL_SIGMA_ML)
            return abs(self.last_fill - target) <= FILL_TOLERANCE_ML
        if st.name == "capper":
            self.last_torque = noise.gauss(CAP_TORQUE_NM, CAP_TORQUE_SIGMA)
            return abs(self.last_torque - CAP_TORQUE_NM) <= CAP_TORQUE_TOLERANCE
        return noise.random() >= st.reject_rate

    def _thermal(self, dt: float) -> None:
        th = self.thermal
        noise = self._noise
        # Filler nozzles wear slowly: the mean fill drifts (bounded random walk).
        self.fill_bias = _clamp(
            self.fill_bias + noise.gauss(0.0, 0.02) * math.sqrt(dt), (-1.5, 1.5)
        )
        # Chilled product: the chiller cycles around 6 °C over 15 minutes.
        target = 6.0 + 0.6 * math.sin(2.0 * math.pi * self.time / 900.0)
        th.product += (target - th.product) * min(1.0, dt / 30.0)
        capper = self.station("capper")
        load = capper.speed / LINE_SPEED_MAX
        motor_target = AMBIENT_C + 38.0 * load**1.5
        th.capper_motor += (motor_target - th.capper_motor) * min(1.0, dt / 240.0)
        # Hot-melt glue: on/off heater between 158 and 162 °C.
        if th.glue >= 162.0:
            th.glue_heating = False
        elif th.glue <= 158.0:
            th.glue_heating = True
        th.glue += (0.8 if th.glue_heating else -0.3) * dt

    def _pump(self, dt: float) -> None:
        p = self.pump
        sp = self.setpoints
        if p.repair_left > 0.0:
            p.repair_left -= dt
            if p.repair_left <= 0.0:
                if p.fault == DownReason.PUMP_HIGH_VIBRATION_TRIP:
                    p.wear = 0.0  # bearings replaced
                p.repair_left = 0.0
                p.fault = DownReason.NONE
        elif self.faults and p.speed > 5.0 and self._rng.random() < dt / PUMP_FAULTS.mtbf_s:
            p.fault, p.repair_left = self._draw_fault(PUMP_FAULTS)
        running_cmd = sp.pump_enable and p.fault == DownReason.NONE
        target = sp.pump_speed if running_cmd else 0.0
        p.speed = _ramp(p.speed, target, PUMP_RAMP, PUMP_RAMP * 2.0, dt)
        n = p.speed / 100.0
        # Operating point: intersection of pump and system curves (affinity laws).
        q_op = math.sqrt(max(PUMP_H0 * n * n - PUMP_HS, 0.0) / (PUMP_K + PUMP_C))
        p.flow += (q_op - p.flow) * min(1.0, dt / 2.0)
        if q_op == 0.0 and p.flow < 0.05:
            p.flow = 0.0  # check valve closed
        p.head = max(PUMP_H0 * n * n - PUMP_K * p.flow * p.flow, 0.0)
        if n > 0.0:
            q_ref = p.flow / n  # flow referred to rated speed
            eta = max(0.25, 0.78 * (1.0 - ((q_ref - 100.0) / 120.0) ** 2))
            hydraulic_kw = RHO_G * (p.flow / 3600.0) * p.head / 1000.0
            shaft_kw = hydraulic_kw / eta + 0.6 * n
            p.power_kw = shaft_kw / 0.92
            load_a = p.power_kw * 1000.0 / (math.sqrt(3.0) * MAINS_V * 0.86)
            p.current = math.hypot(load_a, 7.0 * min(1.0, n * 2.0))
            p.run_seconds += dt
            p.wear += PUMP_WEAR_RATE * n * dt
        else:
            p.power_kw = 0.0
            p.current = 0.0
        p.volume_m3 += p.flow * dt / 3600.0
        bearing_target = AMBIENT_C + 22.0 * n * n + 6.0 * p.wear
        p.bearing_temp += (bearing_target - p.bearing_temp) * min(1.0, dt / 600.0)
        if p.fault == DownReason.NONE and self._vibration() > PUMP_VIBRATION_TRIP:
            p.fault, p.repair_left = DownReason.PUMP_HIGH_VIBRATION_TRIP, 300.0

    def _vibration(self) -> float:
        n = self.pump.speed / 100.0
        if n <= 0.0:
            return 0.0
        return 0.6 + 1.6 * n * n + self.pump.wear * n

    def _energy(self, dt: float) -> None:
        line_kw = sum(st.kw_idle + st.kw_full * st.speed / LINE_SPEED_MAX for st in self.stations)
        if self.thermal.glue_heating:
            line_kw += 2.5
        kw = line_kw + self.pump.power_kw
        e = self.energy
        e.kw = kw
        e.power_factor = 0.80 + 0.12 * min(1.0, kw / 40.0)
        e.kvar = kw * math.tan(math.acos(e.power_factor))
        e.kwh += kw * dt / 3600.0

    # -- outputs --------------------------------------------------------------------------

    def _refresh_values(self) -> None:
        nz = self._noise
        v: dict[str, SignalValue] = {}
        sp = self.setpoints
        v["line.line_speed_sp"] = sp.line_speed
        v["line.fill_volume_sp"] = sp.fill_volume
        for st in self.stations:
            v[f"{st.name}.state"] = int(st.state)
            v[f"{st.name}.down_reason"] = int(st.reason)
            v[f"{st.name}.speed"] = round(st.speed, 2)
            v[f"{st.name}.total"] = st.total
            v[f"{st.name}.good"] = st.good
            v[f"{st.name}.reject"] = st.reject
        th = self.thermal
        v["filler.product_temp"] = round(th.product + nz.gauss(0.0, 0.03), 2)
        v["filler.fill_volume"] = round(self.last_fill, 2)
        v["capper.motor_temp"] = round(th.capper_motor + nz.gauss(0.0, 0.08), 2)
        v["capper.torque"] = round(self.last_torque, 3)
        v["labeller.glue_temp"] = round(th.glue + nz.gauss(0.0, 0.1), 2)
        conveyor = self.station("conveyor")
        v["conveyor.belt_speed"] = round(conveyor.speed * CONVEYOR_PITCH_M, 2)
        v["conveyor.motor_current"] = round(
            (1.2 + 4.5 * conveyor.speed / LINE_SPEED_MAX + nz.gauss(0.0, 0.03))
            if conveyor.speed > 0.0
            else 0.0,
            2,
        )
        p = self.pump
        running = p.speed > 5.0 and p.fault == DownReason.NONE
        vib = self._vibration()
        v["pump.speed_sp"] = sp.pump_speed
        v["pump.enable"] = sp.pump_enable
        v["pump.speed"] = round(p.speed, 2)
        v["pump.rpm"] = round(PUMP_RATED_RPM * p.speed / 100.0)
        v["pump.flow"] = round(max(p.flow + nz.gauss(0.0, 0.3) * (p.flow > 0.5), 0.0), 2)
        v["pump.pressure"] = round(max(p.head * RHO_G / 1e5 + nz.gauss(0.0, 0.01), 0.0), 3)
        v["pump.current"] = round(max(p.current + nz.gauss(0.0, 0.1) * running, 0.0), 2)
        v["pump.vibration"] = round(max(vib + nz.gauss(0.0, 0.05) * (vib > 0.0), 0.0), 3)
        v["pump.bearing_temp"] = round(p.bearing_temp + nz.gauss(0.0, 0.05), 1)
        v["pump.running"] = running
        v["pump.fault"] = p.fault != DownReason.NONE
        v["pump.vibration_warning"] = vib > PUMP_VIBRATION_WARNING
        v["pump.fault_code"] = int(p.fault)
        v["pump.run_seconds"] = int(p.run_seconds)
        v["pump.total_volume"] = round(p.volume_m3, 3)
        e = self.energy
        v["energy.kw"] = round(e.kw * (1.0 + nz.gauss(0.0, 0.002)), 2)
        v["energy.kvar"] = round(e.kvar, 2)
        v["energy.power_factor"] = round(e.power_factor, 3)
        v["energy.kwh"] = round(e.kwh, 4)
        v["energy.voltage"] = round(MAINS_V + nz.gauss(0.0, 0.8), 1)
        v["energy.frequency"] = round(MAINS_HZ + nz.gauss(0.0, 0.01), 2)
        self._values = v

    def values(self) -> dict[str, SignalValue]:
        """Every signal after the last step, keyed ``machine.signal`` (a fresh dict)."""
        return dict(self._values)

    def value(self, signal: str) -> SignalValue:
        return self._values[signal]


SIGNALS: tuple[str, ...] = tuple(PlantModel(0, faults=False).values())
"""Every signal name the model publishes."""
