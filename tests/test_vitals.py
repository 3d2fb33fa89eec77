"""The vital vocabulary: codes, units and plausibility."""

from __future__ import annotations

import typing

import pytest

from app.ingest.schemas import QualityName
from monitor.vitals import (
    DEVICE_QUALITY_NAMES,
    MMHG_PER_KPA,
    ImplausibleValue,
    SampleQuality,
    UnitError,
    Vital,
    normalise,
    resolve_vital,
)


@pytest.mark.parametrize(
    ("code", "vital"),
    [
        ("spo2", Vital.SPO2),
        ("150456", Vital.SPO2),
        ("MDC_PULS_OXIM_SAT_O2", Vital.SPO2),
        ("59408-5", Vital.SPO2),
        ("2708-6", Vital.SPO2),
        ("147842", Vital.HR),
        ("MDC_ECG_CARD_BEAT_RATE", Vital.HR),
        ("8889-8", Vital.PR),
        ("8480-6", Vital.NIBP_SYS),
        ("150022", Vital.NIBP_DIA),
        ("MDC_PRESS_BLD_NONINV_MEAN", Vital.NIBP_MEAN),
        ("61006-3", Vital.PI),
    ],
)
def test_canonical_mdc_and_loinc_codes_resolve(code: str, vital: Vital) -> None:
    assert resolve_vital(code) is vital


def test_unknown_code_resolves_to_none() -> None:
    assert resolve_vital("temperature") is None


def test_kpa_becomes_mmhg() -> None:
    assert normalise(Vital.NIBP_SYS, 16.0, "kPa") == pytest.approx(16.0 * MMHG_PER_KPA)
    assert normalise(Vital.NIBP_DIA, 80, "mm[Hg]") == 80


def test_spo2_fraction_becomes_percent() -> None:
    assert normalise(Vital.SPO2, 0.97, "1") == pytest.approx(97.0)


def test_unit_that_does_not_fit_is_named() -> None:
    with pytest.raises(UnitError, match=r"'kPa' does not fit spo2"):
        normalise(Vital.SPO2, 97, "kPa")


def test_implausible_values_are_refused() -> None:
    with pytest.raises(ImplausibleValue, match="SpO2 101"):
        normalise(Vital.SPO2, 101, "%")
    with pytest.raises(ImplausibleValue):
        normalise(Vital.HR, -1, "/min")
    with pytest.raises(ImplausibleValue):
        normalise(Vital.HR, float("nan"), "/min")


def test_quality_flags_round_trip() -> None:
    flags = SampleQuality.from_names(["probe_off", "artifact"])
    assert flags == SampleQuality.PROBE_OFF | SampleQuality.ARTIFACT
    assert sorted(flags.names()) == ["artifact", "probe_off"]
    assert SampleQuality.NONE.names() == []


def test_api_quality_names_match_the_vocabulary() -> None:
    assert set(typing.get_args(QualityName)) == set(DEVICE_QUALITY_NAMES)
