"""Conversions between protobuf messages and domain values, one module per area."""
