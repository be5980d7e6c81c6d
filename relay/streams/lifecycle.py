"""The live-stream session lifecycle as one transition table (DESIGN.md "Live-stream lifecycle").

Theory of operation: a session starts when an encoder is admitted on a stream's key and ends
when the stream goes idle. In between it moves through

    CONNECTED --media--> RECORDING --playable--> ACTIVE
        ^                   |                      |
        +----reconnect--- DISCONNECTED <--drop-----+   (also from CONNECTED and RECORDING)

and reaches ENDED when the reconnect window expires, when an encoder drops and there is
nothing to resume (no recording yet, or a window of 0 s), or when the application ends it
(complete, disable, delete, reset-stream-key, the session limit). The machine is pure: it
neither reads a clock nor touches the store; each transition returns the effects that the
session hub (`relay.streams.hub`) carries out, in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    CONNECTED = "connected"  # an encoder is in, no media yet
    RECORDING = "recording"  # media is flowing into the recording
    ACTIVE = "active"  # the first segment is playable
    DISCONNECTED = "disconnected"  # the encoder dropped; waiting out the reconnect window
    ENDED = "ended"


class Input(StrEnum):
    MEDIA = "media"  # the first media frame of a connection
    PLAYABLE = "playable"  # the first playable segment of a connection
    DROP = "drop"  # the encoder's connection ended
    RECONNECT = "reconnect"  # an encoder came back on the same stream inside the window
    WINDOW_EXPIRED = "window_expired"
    END = "end"  # the application or a limit ends the session now


class Effect(StrEnum):
    MARK_CONNECTED = "mark_connected"  # event video.live_stream.connected
    MARK_RECORDING = "mark_recording"  # start or continue the asset; ...live_stream.recording
    MARK_ACTIVE = "mark_active"  # status active; video.live_stream.active
    MARK_DISCONNECTED = "mark_disconnected"  # close the recording interval; ...disconnected
    START_WINDOW = "start_window"  # arm the reconnect-window timer
    CANCEL_WINDOW = "cancel_window"
    CLOSE_PUBLISHER = "close_publisher"  # drop the encoder's connection
    FINISH = "finish"  # stream idle, asset completed and ready


# What `DROP` means depends on whether there is something to resume.
_DROP_RESUMABLE = "drop_resumable"
_DROP_FINAL = "drop_final"

_LIVE = (State.CONNECTED, State.RECORDING, State.ACTIVE)

TRANSITIONS: dict[tuple[State, str], tuple[State, tuple[Effect, ...]]] = {
    (State.CONNECTED, Input.MEDIA): (State.RECORDING, (Effect.MARK_RECORDING,)),
    (State.RECORDING, Input.PLAYABLE): (State.ACTIVE, (Effect.MARK_ACTIVE,)),
    (State.DISCONNECTED, Input.RECONNECT): (
        State.CONNECTED, (Effect.CANCEL_WINDOW, Effect.MARK_CONNECTED)),
    (State.DISCONNECTED, Input.WINDOW_EXPIRED): (State.ENDED, (Effect.FINISH,)),
    (State.DISCONNECTED, Input.END): (State.ENDED, (Effect.CANCEL_WINDOW, Effect.FINISH)),
    **{(s, _DROP_RESUMABLE): (State.DISCONNECTED,
                              (Effect.MARK_DISCONNECTED, Effect.START_WINDOW)) for s in _LIVE},
    **{(s, _DROP_FINAL): (State.ENDED, (Effect.MARK_DISCONNECTED, Effect.FINISH))
       for s in _LIVE},
    **{(s, Input.END): (State.ENDED,
                        (Effect.CLOSE_PUBLISHER, Effect.MARK_DISCONNECTED, Effect.FINISH))
       for s in _LIVE},
}


class LifecycleError(RuntimeError):
    """Relay fed the machine an input its state does not accept (a bug, not a peer's fault)."""


@dataclass(slots=True)
class SessionLifecycle:
    """One session's state. `reconnect_window` is the stream's setting in seconds."""

    reconnect_window: float
    state: State = State.CONNECTED
    recorded: bool = False  # whether any connection of this session has sent media

    def start(self) -> tuple[Effect, ...]:
        """The effects of the first admission."""
        return (Effect.MARK_CONNECTED,)

    def handle(self, event: Input) -> tuple[Effect, ...]:
        key: str = event
        if event is Input.DROP:
            resumable = self.recorded and self.reconnect_window > 0
            key = _DROP_RESUMABLE if resumable else _DROP_FINAL
        try:
            new_state, effects = TRANSITIONS[(self.state, key)]
        except KeyError:
            raise LifecycleError(f"{event} is not accepted in state {self.state}") from None
        if event is Input.MEDIA:
            self.recorded = True
        self.state = new_state
        return effects

    def accepts(self, event: Input) -> bool:
        key: str = _DROP_FINAL if event is Input.DROP else event
        return (self.state, key) in TRANSITIONS

    @property
    def ended(self) -> bool:
        return self.state is State.ENDED
