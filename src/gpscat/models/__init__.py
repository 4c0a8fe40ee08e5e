"""gpscat.models"""
