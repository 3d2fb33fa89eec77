"""The simulators' wire vocabulary is Vigil's own, as monitor.vitals defines it.

simulators/ may not import monitor/ (they reach Vigil only through its public doors), so
simulators/wire.py keeps its own copy of the codes, units and quality flags. These tests
hold that copy to monitor.vitals, the single source: a vital, unit or flag changed there
and not here fails them.
"""

from __future__ import annotations

from typing import get_args

from monitor.vitals import DEVICE_QUALITY_NAMES, VITALS, Vital
from simulators.wire import UNITS, QualityFlag, Unit, VitalCode


def test_every_vital_is_sent_in_vigils_canonical_unit() -> None:
    canonical = {spec.vital.value: spec.unit for spec in VITALS.values()}
    assert canonical == UNITS


def test_the_typed_vocabulary_is_vigils() -> None:
    assert set(get_args(VitalCode)) == {vital.value for vital in Vital}
    assert set(get_args(Unit)) == {spec.unit for spec in VITALS.values()}
    assert set(get_args(QualityFlag)) == set(DEVICE_QUALITY_NAMES)
