"""A lost device link: a technical alarm that clears on reconnect and survives a restore."""

from __future__ import annotations

from monitor.engine import LINK_LOST_RULE, AlarmEngine
from monitor.lifecycle import AlarmState
from monitor.protocol import AlarmKind, Phase


def test_link_loss_raises_a_technical_alarm_that_reconnect_clears() -> None:
    engine = AlarmEngine()
    engine.add_session("7", Phase.INFUSION, time=0.0)
    (raised,) = engine.link_state("7", "gw-1", connected=False, time=5.0)
    assert (raised.rule_id, raised.kind, raised.state) == (
        LINK_LOST_RULE,
        AlarmKind.TECHNICAL,
        AlarmState.RAISED,
    )
    assert raised.text == "gw-1 disconnected"
    cleared = engine.link_state("7", "gw-1", connected=True, time=9.0)
    assert [t.state for t in cleared] == [AlarmState.CLEARED], "technical alarms do not latch"


def test_a_restored_link_alarm_needs_no_protocol_rule() -> None:
    before = AlarmEngine()
    before.add_session("7", Phase.INFUSION, time=0.0)
    records = before.link_state("7", "gw-1", connected=False, time=5.0)
    after = AlarmEngine()
    after.add_session("7", Phase.INFUSION, time=10.0)
    (restored,) = after.restore(records)
    assert restored.rule_id == LINK_LOST_RULE
    assert [t.state for t in after.link_state("7", "gw-1", connected=True, time=12.0)] == [
        AlarmState.CLEARED
    ]
