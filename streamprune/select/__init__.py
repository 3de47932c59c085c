"""streamprune.select"""
