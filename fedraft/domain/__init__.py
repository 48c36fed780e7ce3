"""The pure domain: commands, rules and transitions. No I/O, no clock, no randomness (SPEC §1)."""
