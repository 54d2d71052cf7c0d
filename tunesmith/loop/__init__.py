"""The improvement loop: from what production says to a better adapter serving, or a recorded reason
why not. `policy` (the loop file, no torch), `states` (the state machine), `gate` and `canary` (pure
decisions), `steps` (the work of each state, composing data, train, eval, registry and monitor parts)
and `run` (driving a cycle from its last committed state)."""
