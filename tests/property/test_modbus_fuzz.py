"""Fuzz of the Modbus response decoder on fixed, dense plans (every register type in
every byte/word order, bits in registers, strings, coils): only the responses are
random, so a nightly run reaches 100k cases in seconds (``make fuzz``).

Whatever arrives — registers, out-of-range ints, booleans, raw payload bytes, short or
long — decoding never raises, every tag ends Good or Bad_DecodingError, the Good count
is what was returned, Good numeric values are finite or NaN only where the type allows,
and Good string tags hold text.
"""

from __future__ import annotations

import os

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from isthmus.connectors.modbus.config import Order, RegisterKind
from isthmus.connectors.modbus.decode import PlanTag, ReadBlock, build_plan
from isthmus.model.config import DataType
from isthmus.model.quality import Quality

EXAMPLES = int(os.environ.get("ISTHMUS_FUZZ_EXAMPLES", "300"))

WIDE = [
    DataType.INT16,
    DataType.UINT16,
    DataType.INT32,
    DataType.UINT32,
    DataType.INT64,
    DataType.UINT64,
    DataType.FLOAT32,
    DataType.FLOAT64,
]


def _register_tags() -> list[PlanTag]:
    tags: list[PlanTag] = []
    address = 0
    for dt in WIDE:
        for word in Order:
            for byte in Order:
                tags.append(PlanTag(len(tags), RegisterKind.HOLDING, address, dt, word, byte))
                address += {16: 1, 32: 2, 64: 4}[int(dt.value[-2:])]
    for bit in (0, 7, 15):
        tags.append(PlanTag(len(tags), RegisterKind.HOLDING, address, DataType.BOOL, bit=bit))
    address += 1
    for byte in Order:
        tags.append(
            PlanTag(
                len(tags), RegisterKind.HOLDING, address, DataType.STRING, byte_order=byte, length=5
            )
        )
        address += 5
    return tags


COILS = [PlanTag(i, RegisterKind.COIL, 3 * i, DataType.BOOL) for i in range(40)]
PLANS = [
    build_plan(_register_tags(), max_registers=125, max_gap=0),
    build_plan(_register_tags(), max_registers=16, max_gap=0),
    build_plan(COILS, max_gap=2),
]
TYPES = [
    {t.tag_id: t.data_type for t in tags} for tags in (_register_tags(), _register_tags(), COILS)
]
BLOCKS: list[tuple[int, ReadBlock]] = [(p, b) for p, plan in enumerate(PLANS) for b in plan.blocks]


def responses(block: ReadBlock) -> st.SearchStrategy[object]:
    n = st.integers(0, block.count + 3)
    return st.one_of(
        n.flatmap(lambda k: st.lists(st.integers(0, 0xFFFF), min_size=k, max_size=k)),
        n.flatmap(lambda k: st.lists(st.integers(-(2**70), 2**70), min_size=k, max_size=k)),
        n.flatmap(lambda k: st.lists(st.booleans(), min_size=k, max_size=k)),
        st.binary(max_size=2 * block.count + 3),
    )


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.sampled_from(BLOCKS).flatmap(lambda pb: st.tuples(st.just(pb), responses(pb[1]))))
def test_any_response_decodes_to_good_or_bad_decoding(
    case: tuple[tuple[int, ReadBlock], object],
) -> None:
    (plan_index, block), response = case
    plan = PLANS[plan_index]
    values = np.empty(len(plan))
    quality = np.full(len(plan), 12345, dtype=np.uint32)
    texts = np.full(len(plan), None, dtype=object)
    good = block.decode_into(response, values, quality, texts)  # type: ignore[arg-type]
    q = quality[block.start : block.stop]
    assert set(q.tolist()) <= {Quality.GOOD, Quality.BAD_DECODING_ERROR}
    assert good == int(np.count_nonzero(q == Quality.GOOD))
    for i in range(block.start, block.stop):
        if quality[i] != Quality.GOOD:
            continue
        if isinstance(texts[i], str):
            assert np.isnan(values[i])
        else:
            assert texts[i] is None
            dt = TYPES[plan_index][int(plan.tag_ids[i])]
            assert dt is not DataType.STRING
            assert np.isfinite(values[i]) or dt in (DataType.FLOAT32, DataType.FLOAT64)
