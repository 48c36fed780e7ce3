"""fedraft.storage"""
