"""The improvement loop: from what production says to a better adapter serving, or a recorded reason
why not. `policy` (the loop file, no torch), `states` (the state machine), `context` (everything checked
before a cycle starts), `decide` (the gate and canary verdicts, pure), `build` and `release` (the work of
each state) and `run` (driving a cycle from its last committed state).

Like `project/`, this package composes data, train, eval, registry and monitor parts itself: a cycle is
one long-running job whose every step must be committed before the next, which no single layer owns."""
