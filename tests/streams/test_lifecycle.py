"""The session lifecycle table: every accepted path, and what it refuses."""

from __future__ import annotations

import pytest

from relay.streams.lifecycle import (
    TRANSITIONS,
    Effect,
    Input,
    LifecycleError,
    SessionLifecycle,
    State,
)


def run(machine: SessionLifecycle, *inputs: Input) -> list[Effect]:
    effects: list[Effect] = []
    for event in inputs:
        effects.extend(machine.handle(event))
    return effects


def test_a_whole_session_with_a_reconnect() -> None:
    machine = SessionLifecycle(reconnect_window=60)
    assert machine.start() == (Effect.MARK_CONNECTED,)
    assert run(machine, Input.MEDIA, Input.PLAYABLE) == [Effect.MARK_RECORDING,
                                                          Effect.MARK_ACTIVE]
    assert machine.state is State.ACTIVE
    assert run(machine, Input.DROP) == [Effect.MARK_DISCONNECTED, Effect.START_WINDOW]
    assert machine.state is State.DISCONNECTED
    assert run(machine, Input.RECONNECT, Input.MEDIA, Input.PLAYABLE) == [
        Effect.CANCEL_WINDOW, Effect.MARK_CONNECTED, Effect.MARK_RECORDING, Effect.MARK_ACTIVE]
    assert run(machine, Input.DROP, Input.WINDOW_EXPIRED) == [
        Effect.MARK_DISCONNECTED, Effect.START_WINDOW, Effect.FINISH]
    assert machine.ended


def test_zero_window_ends_at_the_first_drop() -> None:
    machine = SessionLifecycle(reconnect_window=0)
    assert run(machine, Input.MEDIA, Input.DROP) == [
        Effect.MARK_RECORDING, Effect.MARK_DISCONNECTED, Effect.FINISH]
    assert machine.ended


def test_a_drop_before_any_media_has_nothing_to_resume() -> None:
    machine = SessionLifecycle(reconnect_window=60)
    assert run(machine, Input.DROP) == [Effect.MARK_DISCONNECTED, Effect.FINISH]
    assert machine.ended


@pytest.mark.parametrize("before", [(), (Input.MEDIA,), (Input.MEDIA, Input.PLAYABLE)])
def test_end_closes_the_publisher_from_any_live_state(before: tuple[Input, ...]) -> None:
    machine = SessionLifecycle(reconnect_window=60)
    run(machine, *before)
    assert machine.handle(Input.END) == (Effect.CLOSE_PUBLISHER, Effect.MARK_DISCONNECTED,
                                         Effect.FINISH)


def test_end_while_waiting_for_a_reconnect_cancels_the_window() -> None:
    machine = SessionLifecycle(reconnect_window=60)
    run(machine, Input.MEDIA, Input.DROP)
    assert machine.handle(Input.END) == (Effect.CANCEL_WINDOW, Effect.FINISH)


@pytest.mark.parametrize("state", list(State))
def test_inputs_outside_the_table_are_refused(state: State) -> None:
    for event in Input:
        machine = SessionLifecycle(reconnect_window=60, state=state, recorded=True)
        key = ("drop_resumable" if event is Input.DROP else event)
        if (state, key) in TRANSITIONS:
            continue
        with pytest.raises(LifecycleError, match=str(event)):
            machine.handle(event)
        assert machine.state is state
        assert not machine.accepts(event) or event is Input.DROP
