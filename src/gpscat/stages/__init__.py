"""gpscat.stages"""
