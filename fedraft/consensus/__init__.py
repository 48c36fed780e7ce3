"""fedraft.consensus"""
