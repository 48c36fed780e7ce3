"""fedraft.cli"""
