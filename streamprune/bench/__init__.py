"""streamprune.bench"""
