"""Identity keys, signatures with domain separation (SPEC D1), and the hash chain."""
