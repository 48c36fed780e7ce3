"""fedraft.service"""
