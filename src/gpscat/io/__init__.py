"""gpscat.io"""
