"""gpscat.core"""
