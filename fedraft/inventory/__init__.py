"""fedraft.inventory"""
