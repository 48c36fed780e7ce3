"""fedraft.transport"""
