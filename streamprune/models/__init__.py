"""streamprune.models"""
