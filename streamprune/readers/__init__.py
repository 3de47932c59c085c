"""streamprune.readers"""
