"""Live sessions: the lifecycle of a stream while encoders publish to it."""
