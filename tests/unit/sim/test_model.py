"""The plant model: deterministic, physically plausible, machines that interact."""

from __future__ import annotations

import pytest

from isthmus.sim.model import (
    BUFFER_CAPACITY,
    SIGNALS,
    DownReason,
    MachineState,
    PlantModel,
)

MACHINES = ("filler", "capper", "labeller", "conveyor")


def run(model: PlantModel, seconds: float, dt: float = 0.1) -> None:
    for _ in range(round(seconds / dt)):
        model.step(dt)


def trace(seed: int, steps: int) -> list[dict[str, float | int | bool]]:
    model = PlantModel(seed)
    out = []
    for i in range(steps):
        model.step(0.1 if i % 3 else 0.25)
        if i == 500:
            model.write_setpoint("line_speed", 450.0)
        out.append(model.values())
    return out


def test_same_seed_same_values() -> None:
    assert trace(7, 1500) == trace(7, 1500)


def test_different_seed_different_values() -> None:
    assert trace(7, 600)[-1] != trace(8, 600)[-1]


def test_values_cover_every_signal() -> None:
    model = PlantModel(1)
    model.step(0.1)
    assert set(model.values()) == set(SIGNALS)


def test_non_positive_dt_does_nothing() -> None:
    model = PlantModel(3)
    before = model.values()
    model.step(0.0)
    model.step(-1.0)
    assert model.time == 0.0
    assert model.values() == before


def model_start_buffer() -> int:
    return int(PlantModel(0).buffers[0])


def test_counters_monotonic_and_consistent() -> None:
    model = PlantModel(11)  # random faults on: the line stops and restarts
    last = {m: (0, 0, 0) for m in MACHINES}
    for _ in range(2400):  # 20 minutes
        model.step(0.5)
        v = model.values()
        for m in MACHINES:
            total, good, reject = v[f"{m}.total"], v[f"{m}.good"], v[f"{m}.reject"]
            assert good + reject == total
            assert (total, good, reject) >= last[m]
            assert all(a >= b for a, b in zip((total, good, reject), last[m], strict=True))
            last[m] = (int(total), int(good), int(reject))
    filler_total = last["filler"][0]
    assert filler_total > 1000
    ratio = last["filler"][2] / filler_total
    assert 0.002 < ratio < 0.05  # realistic reject ratio
    # A bottle is counted by each machine it goes through, never created downstream
    # (buffers start half full).
    start = model_start_buffer()
    assert last["filler"][1] + start >= last["capper"][0]
    assert last["capper"][1] + start >= last["labeller"][0]
    assert last["labeller"][1] + start >= last["conveyor"][0]
    good_in_flow = last["filler"][1] + 3 * start
    assert good_in_flow == sum(model.buffers) + last["conveyor"][0] + sum(
        last[m][2] for m in ("capper", "labeller")
    )


def test_random_faults_change_states_within_minutes() -> None:
    model = PlantModel(42)
    seen: set[tuple[str, int, int]] = set()
    for _ in range(2400):  # 10 minutes
        model.step(0.25)
        for m in MACHINES:
            seen.add((m, int(model.value(f"{m}.state")), int(model.value(f"{m}.down_reason"))))
    states = {s for _, s, _ in seen}
    assert MachineState.RUNNING in states
    assert MachineState.DOWN in states
    reasons = {r for _, _, r in seen} - {0}
    assert reasons <= {int(r) for r in DownReason}
    assert reasons  # at least one fault happened
    # A machine is down exactly when it has a reason.
    for _, state, reason in seen:
        assert (state == MachineState.DOWN) == (reason != 0)


def test_no_faults_when_disabled() -> None:
    model = PlantModel(42, faults=False)
    run(model, 600, dt=0.5)
    for m in MACHINES:
        assert model.value(f"{m}.state") == MachineState.RUNNING


def test_down_filler_starves_downstream() -> None:
    model = PlantModel(5, faults=False)
    run(model, 30)
    model.inject_fault("filler", DownReason.JAM, 60.0)
    model.step(0.1)
    assert model.value("filler.state") == MachineState.DOWN
    assert model.value("filler.down_reason") == DownReason.JAM
    run(model, 30)
    assert model.value("capper.state") == MachineState.STARVED
    assert model.value("labeller.state") == MachineState.STARVED
    assert model.value("conveyor.state") == MachineState.STARVED
    assert model.value("capper.speed") == 0.0
    run(model, 40)  # repaired after 60 s: everything runs again
    for m in MACHINES:
        assert model.value(f"{m}.state") == MachineState.RUNNING
        assert model.value(f"{m}.down_reason") == 0


def test_down_conveyor_blocks_upstream() -> None:
    model = PlantModel(5, faults=False)
    run(model, 30)
    model.inject_fault("conveyor", DownReason.MOTOR_OVERLOAD, 120.0)
    run(model, 60)
    assert model.value("conveyor.state") == MachineState.DOWN
    assert model.value("labeller.state") == MachineState.BLOCKED
    assert model.value("capper.state") == MachineState.BLOCKED
    assert model.value("filler.state") == MachineState.BLOCKED
    assert model.buffers == [BUFFER_CAPACITY] * 3
    total = model.value("filler.total")
    run(model, 10)
    assert model.value("filler.total") == total  # nothing produced while blocked


def test_line_speed_setpoint_moves_speed() -> None:
    model = PlantModel(2, faults=False)
    run(model, 20)
    assert model.value("filler.speed") == pytest.approx(300.0)
    assert model.write_setpoint("line_speed", 480.0) == 480.0
    run(model, 1)
    assert 300.0 < float(model.value("filler.speed")) < 480.0  # ramping, not a jump
    run(model, 10)
    assert model.value("filler.speed") == pytest.approx(480.0)
    assert model.value("line.line_speed_sp") == 480.0
    assert model.write_setpoint("line_speed", 5000.0) == 600.0  # clamped
    model.write_setpoint("line_speed", 0.0)
    run(model, 10)
    for m in MACHINES:
        assert model.value(f"{m}.state") == MachineState.IDLE
        assert model.value(f"{m}.speed") == 0.0


def test_fill_volume_setpoint_moves_fill() -> None:
    model = PlantModel(2, faults=False)
    model.write_setpoint("fill_volume", 750.0)
    fills = []
    for _ in range(600):
        model.step(0.1)
        fills.append(float(model.value("filler.fill_volume")))
    mean = sum(fills[100:]) / len(fills[100:])
    assert mean == pytest.approx(750.0, abs=2.5)


def test_pump_follows_speed_setpoint_with_affinity_laws() -> None:
    model = PlantModel(4, faults=False)
    run(model, 30)
    flow_75 = float(model.value("pump.flow"))
    pressure_75 = float(model.value("pump.pressure"))
    current_75 = float(model.value("pump.current"))
    assert 40.0 < flow_75 < 80.0
    assert model.value("pump.running") is True
    model.write_setpoint("pump_speed", 100.0)
    run(model, 30)
    assert model.value("pump.speed") == pytest.approx(100.0)
    assert float(model.value("pump.flow")) == pytest.approx(100.0, rel=0.03)  # rated point
    assert float(model.value("pump.flow")) > flow_75
    assert float(model.value("pump.pressure")) > pressure_75
    assert float(model.value("pump.current")) > current_75
    assert model.value("pump.rpm") == 1480
    model.write_setpoint("pump_enable", False)
    run(model, 20)
    assert model.value("pump.running") is False
    assert model.value("pump.flow") == 0.0
    assert model.value("pump.current") == 0.0


def test_pump_bearing_degrades_then_trips() -> None:
    model = PlantModel(4, faults=False)
    model.write_setpoint("pump_speed", 100.0)
    run(model, 60)
    vib_start = float(model.value("pump.vibration"))
    model.pump.wear = 8.0  # hours of wear later
    run(model, 1)
    assert float(model.value("pump.vibration")) > vib_start + 5.0
    assert model.value("pump.vibration_warning") is True
    model.pump.wear = 12.0
    run(model, 1)
    assert model.value("pump.fault") is True
    assert model.value("pump.fault_code") == DownReason.PUMP_HIGH_VIBRATION_TRIP
    run(model, 400)  # repaired: new bearings
    assert model.value("pump.fault") is False
    assert model.pump.wear < 0.1


def test_energy_integrates_power() -> None:
    model = PlantModel(9, faults=False)
    run(model, 60)
    kwh0 = float(model.value("energy.kwh"))
    kw_samples = []
    last = kwh0
    for _ in range(3600):  # six minutes
        model.step(0.1)
        kwh = float(model.value("energy.kwh"))
        assert kwh >= last
        last = kwh
        kw_samples.append(float(model.value("energy.kw")))
    mean_kw = sum(kw_samples) / len(kw_samples)
    assert 10.0 < mean_kw < 60.0
    assert last - kwh0 == pytest.approx(mean_kw * 360.0 / 3600.0, rel=0.02)
    # Stopping the line and the pump lowers consumption.
    model.write_setpoint("line_speed", 0.0)
    model.write_setpoint("pump_enable", False)
    run(model, 30)
    assert float(model.value("energy.kw")) < mean_kw / 2


def test_setpoint_errors() -> None:
    model = PlantModel(1)
    with pytest.raises(KeyError):
        model.write_setpoint("nope", 1.0)
    with pytest.raises(ValueError):
        model.write_setpoint("line_speed", float("nan"))
    with pytest.raises(KeyError):
        model.inject_fault("nope", DownReason.JAM, 1.0)
